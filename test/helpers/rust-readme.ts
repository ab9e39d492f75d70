/**
 * The command lines of rust-vmm's vhost-device-i2c README (vhost-device/vhost-device-i2c/README.md),
 * verbatim: the drop-in promise is that each runs unchanged. Also splits such a line into argv as a
 * POSIX shell would for these lines (blanks separate words, double quotes group them).
 * @module
 */

/** The Examples section's daemon invocations. */
export const RUST_README_COMMANDS = [
  'vhost-device-i2c --socket-path=vi2c.sock --socket-count=1 --device-list "i915 gmbus dpd:32"',
  'vhost-device-i2c --socket-path=vi2c.sock --socket-count=1 --device-list "0:32"',
] as const;

/** The Options section's --device-list examples (each an option with its value, not a whole command). */
export const RUST_README_DEVICE_LISTS = [
  '--device-list "i915 gmbus dpd:32:21,DPDDC-D:10:23"',
  '--device-list "2:32:21,3:10:23"',
] as const;

/** The adapters those lines name, by number: what a fake adapter lookup answers. */
export const RUST_README_ADAPTERS: Readonly<Record<string, number>> = {
  "i915 gmbus dpd": 0,
  "DPDDC-D": 1,
};

/** Shell words of a command line without escapes or single quotes; the program name is dropped. */
export function commandArgs(line: string): string[] {
  const words = [...line.matchAll(/(?:"[^"]*"|[^\s"]+)+/g)].map((match) =>
    match[0].replaceAll('"', ""),
  );
  return words.slice(1);
}

/** Words of an option fragment (no program name). */
export function fragmentArgs(fragment: string): string[] {
  return commandArgs(`program ${fragment}`);
}
