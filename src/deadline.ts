/**
 * settlesWithin: waiting for something that may never come, for a bounded time (shutdown waits for
 * transfers and threads this way).
 * @module
 */

/** Resolves true when `promise` settles within `ms`, false when `ms` passed first. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<false>((resolveLate) => {
    timer = setTimeout(() => resolveLate(false), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      deadline,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
