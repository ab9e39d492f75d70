/**
 * The base of the project's errors that carry a stable `code`: the code and the name set once here.
 * Each layer keeps its own subclass (its name, its code type, any extra fields).
 * Must not: hold codes or messages of any layer.
 * @module
 */

/** An error with a stable, machine-readable `code`; `name` is the subclass's name. */
export class CodedError<C extends string> extends Error {
  readonly code: C;
  constructor(code: C, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
