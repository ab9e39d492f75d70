/**
 * A main process for testing FdStoreSupervisor: on each start it prints one JSON line on stdout
 * saying what it was passed (LISTEN_PID, and for each fd from 3 on its name, kind and, for a memfd,
 * its content), then runs the steps its plan gives for this start: store fds with FDSTORE=1, remove
 * them, notify, hand over to a copy of itself with MAINPID=, exit, or die of a signal.
 * Usage: node fd-store-sender.js <counter file> <plan: JSON array of step lists, one per start; the
 * last list serves every later start>
 * @module
 */

import { spawn } from "node:child_process";
import {
  existsSync,
  fstatSync,
  readFileSync,
  readlinkSync,
  readSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { createMemfd } from "../../src/sys/memfd.js";
import { native } from "../../src/sys/native.js";
import { LISTEN_FDS_START } from "../../src/sys/service-manager.js";

export type SenderStep =
  /** A memfd holding `content`, stored as `name` (FDPOLL=0 when `poll` is false). */
  | { readonly memfd: string; readonly name: string; readonly poll?: boolean }
  /** `count` eventfds in one message, stored as `name` (`bare`: sent without FDSTORE=1). */
  | { readonly eventfds: number; readonly name: string; readonly bare?: boolean }
  /** One end of a socket pair stored as `name`; this process keeps the other, so it hangs up when this process dies. */
  | { readonly socketpair: string; readonly poll?: boolean }
  /** The fds this start was passed under `name`, stored again under the same name. */
  | { readonly again: string }
  | { readonly remove: string }
  /** BARRIER=1 with one fd, as sd_notify_barrier sends it. */
  | { readonly barrier: true }
  /** A raw notification (newline-separated). */
  | { readonly notify: string }
  /** Starts a copy of this process (the next start), says MAINPID=<its pid>, then exits 0. */
  | { readonly handover: true }
  | { readonly exit: number }
  | { readonly kill: NodeJS.Signals }
  /** Stays alive until signalled. */
  | { readonly idle: true };

/** What one start reports. */
export interface SenderReport {
  readonly start: number;
  readonly pid: number;
  readonly listenPid: string | null;
  readonly fds: readonly {
    readonly fd: number;
    readonly name: string;
    readonly kind: "memfd" | "eventfd" | "listening socket" | "socket" | "other";
    readonly content?: string;
  }[];
}

function kindOf(fd: number): SenderReport["fds"][number]["kind"] {
  const link = readlinkSync(`/proc/self/fd/${fd}`);
  if (link.startsWith("/memfd:")) return "memfd";
  if (link === "anon_inode:[eventfd]") return "eventfd";
  if (link.startsWith("socket:"))
    return native().socketInfo(fd)[2] === 1 ? "listening socket" : "socket";
  return "other";
}

function contentOf(fd: number): string {
  const bytes = Buffer.alloc(fstatSync(fd).size);
  readSync(fd, bytes, 0, bytes.length, 0);
  return bytes.toString("utf8");
}

function notify(text: string, fds: readonly number[] = []): void {
  const path = process.env.NOTIFY_SOCKET;
  if (path === undefined) throw new Error("no NOTIFY_SOCKET");
  native().datagramSend(path, Buffer.from(text), fds);
}

const [counterFile, planText] = process.argv.slice(2) as [string, string];
const start = existsSync(counterFile) ? Number(readFileSync(counterFile, "utf8")) : 0;
writeFileSync(counterFile, String(start + 1));
const plan = JSON.parse(planText) as SenderStep[][];

const passed =
  process.env.LISTEN_PID === String(process.pid) ? Number(process.env.LISTEN_FDS ?? 0) : 0;
const names = process.env.LISTEN_FDNAMES?.split(":") ?? [];
const fds = Array.from({ length: passed }, (_, i) => {
  const fd = LISTEN_FDS_START + i;
  const kind = kindOf(fd);
  return { fd, name: names[i] ?? "", kind, ...(kind === "memfd" && { content: contentOf(fd) }) };
});
const report: SenderReport = {
  start,
  pid: process.pid,
  listenPid: process.env.LISTEN_PID ?? null,
  fds,
};
writeSync(1, `${JSON.stringify(report)}\n`);

/** Fds this process keeps open for as long as it lives (the other ends of stored socket pairs). */
const kept: number[] = [];
for (const step of plan[Math.min(start, plan.length - 1)] ?? []) {
  if ("memfd" in step) {
    const fd = createMemfd(0, step.name);
    writeSync(fd, step.memfd, 0);
    notify(`FDSTORE=1\nFDNAME=${step.name}${step.poll === false ? "\nFDPOLL=0" : ""}`, [fd]);
  } else if ("eventfds" in step) {
    const eventfds = Array.from({ length: step.eventfds }, () => native().eventfd(0));
    notify(`${step.bare === true ? "" : "FDSTORE=1\n"}FDNAME=${step.name}`, eventfds);
  } else if ("socketpair" in step) {
    const [mine, stored] = native().socketPair();
    kept.push(mine);
    notify(`FDSTORE=1\nFDNAME=${step.socketpair}${step.poll === false ? "\nFDPOLL=0" : ""}`, [
      stored,
    ]);
  } else if ("again" in step) {
    const again = fds.filter((fd) => fd.name === step.again).map((fd) => fd.fd);
    notify(`FDSTORE=1\nFDNAME=${step.again}`, again);
  } else if ("remove" in step) {
    notify(`FDSTOREREMOVE=1\nFDNAME=${step.remove}`);
  } else if ("barrier" in step) {
    notify("BARRIER=1", [native().eventfd(0)]);
  } else if ("notify" in step) {
    notify(step.notify);
  } else if ("handover" in step) {
    const child = spawn(process.execPath, process.argv.slice(1), { stdio: "inherit" });
    notify(`MAINPID=${child.pid}`);
    process.exit(0);
  } else if ("exit" in step) {
    process.exit(step.exit);
  } else if ("kill" in step) {
    process.kill(process.pid, step.kill);
  } else if ("idle" in step) {
    setInterval(() => {}, 60_000);
  }
}
