/**
 * Soak: N transfers through the full path (real daemon process, vhost-user socket, emulated 24c02 without write cycle,
 * the in-repo frontend and driver), measuring the daemon's RSS and fd count at the start, middle and
 * end. `runSoak` is also used by test/soak.test.ts for a short run that asserts flatness.
 * Run by hand: `npx tsc -p tsconfig.json && node dist/bench/soak.js [transfers]` (default 1000000);
 * prints one line per checkpoint and a summary. Must not reach into the daemon's modules.
 * @module
 */

import { pathToFileURL } from "node:url";
import { I2cGuest } from "../src/frontend/i2c-driver.js";
import { footprint, type ProcessFootprint, startThreeSocketDaemon } from "../test/fuzz/harness.js";

export interface SoakCheckpoint extends ProcessFootprint {
  readonly transfers: number;
}

export interface SoakResult {
  readonly transfers: number;
  readonly seconds: number;
  readonly perSecond: number;
  /** Taken after a warm-up, at the middle and at the end. */
  readonly start: SoakCheckpoint;
  readonly middle: SoakCheckpoint;
  readonly end: SoakCheckpoint;
}

/** Transfers kept in flight at once (each one write message; 8 fit a 16-entry ring). */
const IN_FLIGHT = 8;
const WARM_UP = 5000;

export async function runSoak(
  transfers: number,
  log: (line: string) => void = () => {},
): Promise<SoakResult> {
  const daemon = await startThreeSocketDaemon();
  const pid = daemon.daemon.pid;
  const guest = await I2cGuest.connect(daemon.paths[0]!, { queueSize: 16 });
  try {
    // Mixed traffic: writes in batches, then a write+read checked against what was written.
    let done = 0;
    const batch = async (): Promise<void> => {
      const submissions = Array.from({ length: IN_FLIGHT }, (_, i) =>
        guest.driver.submit([{ addr: 0x50, write: Uint8Array.of(i * 16, done & 0xff) }], {
          kick: false,
        }),
      );
      guest.driver.kickIfNeeded();
      for (const submission of submissions) {
        const result = await guest.driver.wait(submission);
        if (!result.ok) throw new Error(`write transfer failed after ${done} transfers`);
      }
      const check = await guest.driver.transfer([
        { addr: 0x50, write: Uint8Array.of(0) },
        { addr: 0x50, read: 1 },
      ]);
      if (!check.ok || check.reads[0]?.[0] !== (done & 0xff)) {
        throw new Error(`read-back failed after ${done} transfers`);
      }
      done += IN_FLIGHT + 1;
    };
    const checkpoint = (): SoakCheckpoint => ({ transfers: done, ...footprint(pid) });
    while (done < WARM_UP) await batch();
    done = 0;
    const start = checkpoint();
    log(`start   ${format(start)}`);
    const started = performance.now();
    let middle: SoakCheckpoint | null = null;
    while (done < transfers) {
      await batch();
      if (middle === null && done >= transfers / 2) {
        middle = checkpoint();
        log(`middle  ${format(middle)}`);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const end = checkpoint();
    log(`end     ${format(end)}`);
    return {
      transfers: done,
      seconds,
      perSecond: done / seconds,
      start,
      middle: middle ?? end,
      end,
    };
  } finally {
    await guest.close();
    await daemon.stop();
  }
}

function format(c: SoakCheckpoint): string {
  return `transfers=${c.transfers} rss=${c.rssKiB} KiB fds=${c.fds} maps=${c.maps}`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const transfers = Number(process.argv[2] ?? 1_000_000);
  const result = await runSoak(transfers, (line) => console.log(line));
  console.log(
    `soak: ${result.transfers} transfers in ${result.seconds.toFixed(1)} s = ` +
      `${Math.round(result.perSecond)} transfers/s; RSS ${result.start.rssKiB} / ${result.middle.rssKiB} / ` +
      `${result.end.rssKiB} KiB; fds ${result.start.fds} / ${result.middle.fds} / ${result.end.fds}`,
  );
}
