/**
 * Real-guest harness: boots the small Linux guest built by `guest/build.sh` under QEMU (TCG), runs a
 * shell script inside it, and returns the console with the script's framed output and its
 * `RESULT key value` lines. The script travels as a second cpio archive appended to the image's
 * initramfs, so nothing is rebuilt per test. QEMU is always killed at the deadline: a guest
 * driver waiting on a lost request never powers off by itself.
 * Must not start the daemon or reach into its modules: tests pass the vhost-user socket in `qemuArgs`.
 * @module
 */

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CodedError } from "../../src/errors.js";

/** The image build script, from dist/test/helpers/ (compiled) and test/helpers/ alike. */
export const GUEST_BUILD_SCRIPT = fileURLToPath(
  new URL(
    import.meta.url.includes("/dist/") ? "../../../guest/build.sh" : "../../guest/build.sh",
    import.meta.url,
  ),
);

/** Markers printed by the guest's /init (guest/init) on the serial console. */
export const GUEST_MARKERS = {
  booted: "@@GUEST-BOOTED",
  begin: "@@GUEST-SCRIPT-BEGIN@@",
  end: "@@GUEST-SCRIPT-END status=",
} as const;

/** Where the injected script lands in the guest; /init runs it with `sh`. */
const SCRIPT_PATH = "test/script.sh";
/** The test's own script, which SCRIPT_PATH runs, then waits for the console to drain. */
const SCRIPT_BODY_PATH = "test/script-body.sh";
/**
 * /init prints the end marker and powers off at once (`poweroff -f`): output still queued in the
 * serial console's buffers is lost, end marker included, when a script ends with a burst (a daemon's
 * log) and the host reads QEMU's console slowly. Setting a console mode (stty) waits until the
 * console has sent everything (TCSADRAIN), so only the short marker is left to go. Done here rather
 * than in /init, which is part of every cached guest image.
 */
const SCRIPT_WRAPPER = `sh /${SCRIPT_BODY_PATH}
status=$?
stty -F /dev/console onlcr 2>/dev/null
exit $status
`;

export const DEFAULT_GUEST_TIMEOUT_MS = 120_000;
export const DEFAULT_GUEST_MEMORY_MIB = 256;

export interface GuestImages {
  readonly kernel: string;
  readonly initrd: string;
}

export interface BootGuestOptions extends GuestImages {
  /** Shell commands run by the guest's /bin/sh (busybox) after boot; stderr is merged into stdout. */
  readonly script: string;
  /** More files for the guest, path (relative to /) → contents; e.g. data a test writes to a chip. */
  readonly files?: Readonly<Record<string, string | Uint8Array>>;
  /** Extra QEMU arguments, e.g. from `vhostUserI2cArgs(socketPath)`. */
  readonly qemuArgs?: readonly string[];
  /** Guest RAM, always a shared memfd so a vhost-user backend can map it. */
  readonly memoryMiB?: number;
  /** QEMU is killed (SIGKILL) after this long, whatever the guest is doing. */
  readonly timeoutMs?: number;
  /** Appended to the kernel command line. */
  readonly append?: string;
  /** QEMU binary; default qemuBinary(). */
  readonly qemu?: string;
  /** Console text as it arrives (CRLF already folded), e.g. to forward it to a log. */
  readonly onConsole?: (text: string) => void;
  /** Aborting kills QEMU like the timeout does. */
  readonly signal?: AbortSignal;
}

export interface GuestRun {
  /** QEMU's exit code; null when it was killed. A guest that powers off gives 0. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** True when the deadline (or the abort signal) killed QEMU. */
  readonly timedOut: boolean;
  /** Everything the guest wrote to ttyS0, with `\r\n` folded to `\n`. */
  readonly console: string;
  /** QEMU's own stderr (its errors about chardevs and devices land here). */
  readonly stderr: string;
  /**
   * Text between the begin and end markers; when the script never finished (timeout), everything
   * after the begin marker; null when the script never started.
   */
  readonly scriptOutput: string | null;
  /** The script's exit status as /init reported it; null when it never finished. */
  readonly scriptStatus: number | null;
  /** `RESULT <key> <value>` lines of the script output; a repeated key keeps its last value. */
  readonly results: ReadonlyMap<string, string>;
  /** Milliseconds from spawning QEMU until /init printed its first marker; null when it never did. */
  readonly bootMs: number | null;
}

export class GuestError extends CodedError<"GUEST_NOT_BUILT" | "GUEST_SPAWN_FAILED"> {}

/**
 * Environment variable naming the QEMU binary the guest tests run, e.g. the wrapper that
 * `guest/qemu-10.sh` prints; unset, `qemu-system-x86_64` from PATH.
 */
export const QEMU_ENV = "VHOST_DEVICE_I2C_QEMU";

/**
 * Environment variable choosing the guest kernel series (`guest/build.sh --kernel`, default 6.1).
 * guest/build.sh reads it itself, so `--check` here and `npm run test:e2e`'s build agree.
 */
export const GUEST_LINUX_ENV = "VHOST_DEVICE_I2C_GUEST_LINUX";

/** The QEMU binary `bootGuest` runs unless told otherwise (see QEMU_ENV). */
export function qemuBinary(): string {
  return process.env[QEMU_ENV] || "qemu-system-x86_64";
}

export interface QemuVersion {
  readonly major: number;
  readonly minor: number;
  /** The first line of `--version`, for messages. */
  readonly text: string;
}

const qemuVersions = new Map<string, QemuVersion | null>();

/** The version `qemu --version` prints (default: qemuBinary()); null when it does not run. */
export function qemuVersion(qemu = qemuBinary()): QemuVersion | null {
  if (!qemuVersions.has(qemu)) {
    let found: QemuVersion | null = null;
    try {
      const text = execFileSync(qemu, ["--version"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      }).split("\n")[0];
      const match = /version (\d+)\.(\d+)/.exec(text ?? "");
      if (text && match?.[1] && match[2]) {
        found = { major: Number(match[1]), minor: Number(match[2]), text };
      }
    } catch {
      found = null;
    }
    qemuVersions.set(qemu, found);
  }
  return qemuVersions.get(qemu) ?? null;
}

/**
 * The finished guest image, or null when none is built for the current inputs (tests then skip
 * by name). `VHOST_DEVICE_I2C_GUEST_KERNEL` and `VHOST_DEVICE_I2C_GUEST_INITRD` override the lookup;
 * GUEST_LINUX_ENV picks the kernel series it looks for; `variant` the extra kernel fragment
 * (`guest/build.sh --variant`, e.g. "realkernel"), which the overrides do not name.
 * Never builds: `guest/build.sh` takes minutes cold and installs packages.
 */
export function findGuestImages(variant?: string): GuestImages | null {
  const kernel = process.env.VHOST_DEVICE_I2C_GUEST_KERNEL;
  const initrd = process.env.VHOST_DEVICE_I2C_GUEST_INITRD;
  if (kernel && initrd && variant === undefined) return { kernel, initrd };
  let printed: string;
  try {
    printed = execFileSync(
      GUEST_BUILD_SCRIPT,
      ["--check", ...(variant ? ["--variant", variant] : [])],
      {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
  } catch {
    return null;
  }
  const found = parseBuildOutput(printed);
  return found ?? null;
}

/**
 * Why tests needing the guest image (of `variant`) skip when findGuestImages finds none: what builds
 * it and what building needs, since a skip is all a run without the image shows of those tests.
 */
export function noGuestImageReason(variant?: string): string {
  const build = variant === undefined ? "guest/build.sh" : `guest/build.sh --variant ${variant}`;
  // `npm run test:e2e` builds the default image only.
  const orTestE2e =
    variant === undefined ? "; `npm run test:e2e` builds it, then runs these tests" : "";
  return `no guest image for the current inputs: ${build} builds it (as root: it installs what it needs with apt)${orTestE2e}`;
}

/** Like `findGuestImages`, but throws a GuestError (code GUEST_NOT_BUILT) saying how to build. */
export function requireGuestImages(): GuestImages {
  const images = findGuestImages();
  if (!images) {
    throw new GuestError("GUEST_NOT_BUILT", `no guest image; build it with ${GUEST_BUILD_SCRIPT}`);
  }
  return images;
}

/** Reads `GUEST_KERNEL=` and `GUEST_INITRD=` lines as printed by guest/build.sh. */
export function parseBuildOutput(text: string): GuestImages | null {
  const values = new Map<string, string>();
  for (const line of text.split("\n")) {
    const match = /^(GUEST_[A-Z]+)=(.+)$/.exec(line.trim());
    if (match?.[1] && match[2]) values.set(match[1], match[2]);
  }
  const kernel = values.get("GUEST_KERNEL");
  const initrd = values.get("GUEST_INITRD");
  return kernel && initrd ? { kernel, initrd } : null;
}

/** Escapes a value for a QEMU `key=value,...` option string (a comma is doubled). */
export function qemuOptionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * QEMU arguments attaching a vhost-user-i2c-pci device to the backend socket at `socketPath`
 * (QEMU connects as the client, so the backend must already listen).
 */
export function vhostUserI2cArgs(socketPath: string, id = "vi2c"): string[] {
  return [
    "-chardev",
    `socket,id=${id},path=${qemuOptionValue(socketPath)}`,
    "-device",
    `vhost-user-i2c-pci,chardev=${id}`,
  ];
}

/** Quotes a string as one word for the guest's POSIX shell. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

export interface CpioEntry {
  /** Path inside the archive, without a leading slash; parents must exist or come earlier. */
  readonly name: string;
  /** Regular file contents; omit for a directory. */
  readonly data?: string | Uint8Array;
  /** Permission bits; default 0o755 for directories, 0o644 for files. */
  readonly mode?: number;
}

const NEWC_MAGIC = "070701";
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

/**
 * Encodes entries as a cpio "newc" archive (what the kernel's initramfs unpacker reads), ending
 * with the TRAILER!!! entry and padded to 4 bytes so another archive may follow it.
 */
export function encodeCpioNewc(entries: readonly CpioEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  let length = 0;
  const push = (bytes: Uint8Array): void => {
    parts.push(bytes);
    length += bytes.length;
    const padding = (4 - (length % 4)) % 4;
    if (padding) {
      parts.push(new Uint8Array(padding));
      length += padding;
    }
  };
  const member = (name: string, mode: number, data: Uint8Array, inode: number): void => {
    const nameBytes = encoder.encode(`${name}\0`);
    const fields = [
      inode,
      mode,
      0, // uid
      0, // gid
      mode & S_IFDIR ? 2 : 1, // nlink
      0, // mtime
      data.length,
      0, // devmajor
      0, // devminor
      0, // rdevmajor
      0, // rdevminor
      nameBytes.length,
      0, // check
    ];
    const header = NEWC_MAGIC + fields.map((field) => field.toString(16).padStart(8, "0")).join("");
    // Header and name are padded together, then the data on its own.
    const headed = new Uint8Array(header.length + nameBytes.length);
    headed.set(encoder.encode(header), 0);
    headed.set(nameBytes, header.length);
    push(headed);
    if (data.length) push(data);
  };
  entries.forEach((entry, index) => {
    const name = entry.name.replace(/^\/+/, "");
    if (!name || name.includes("\0")) throw new RangeError(`bad cpio member name: ${entry.name}`);
    const isFile = entry.data !== undefined;
    const data =
      typeof entry.data === "string"
        ? encoder.encode(entry.data)
        : (entry.data ?? new Uint8Array());
    const permissions = (entry.mode ?? (isFile ? 0o644 : 0o755)) & 0o7777;
    member(name, (isFile ? S_IFREG : S_IFDIR) | permissions, data, index + 1);
  });
  member("TRAILER!!!", 0, new Uint8Array(), 0);
  const archive = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    archive.set(part, offset);
    offset += part.length;
  }
  return archive;
}

/** The archive /init looks for: the script plus any extra files, with their parent directories. */
export function scriptArchive(
  script: string,
  files: Readonly<Record<string, string | Uint8Array>> = {},
): Uint8Array {
  const entries: CpioEntry[] = [];
  const directories = new Set<string>();
  const addFile = (path: string, data: string | Uint8Array, mode: number): void => {
    const name = path.replace(/^\/+/, "");
    const segments = name.split("/");
    for (let depth = 1; depth < segments.length; depth++) {
      const directory = segments.slice(0, depth).join("/");
      if (!directories.has(directory)) {
        directories.add(directory);
        entries.push({ name: directory });
      }
    }
    entries.push({ name, data, mode });
  };
  for (const [path, data] of Object.entries(files)) addFile(path, data, 0o644);
  addFile(SCRIPT_BODY_PATH, script.endsWith("\n") ? script : `${script}\n`, 0o755);
  addFile(SCRIPT_PATH, SCRIPT_WRAPPER, 0o755);
  return encodeCpioNewc(entries);
}

/** Splits the console into the script's framed output, its status and its RESULT lines. */
export function parseConsole(
  consoleText: string,
): Pick<GuestRun, "scriptOutput" | "scriptStatus" | "results"> {
  const beginAt = consoleText.indexOf(`${GUEST_MARKERS.begin}\n`);
  if (beginAt < 0) return { scriptOutput: null, scriptStatus: null, results: new Map() };
  const bodyStart = beginAt + GUEST_MARKERS.begin.length + 1;
  const endAt = consoleText.indexOf(GUEST_MARKERS.end, bodyStart);
  let scriptOutput: string;
  let scriptStatus: number | null = null;
  if (endAt < 0) {
    scriptOutput = consoleText.slice(bodyStart);
  } else {
    scriptOutput = consoleText.slice(bodyStart, endAt);
    const status = /^(\d+)@@/.exec(consoleText.slice(endAt + GUEST_MARKERS.end.length));
    if (status?.[1]) scriptStatus = Number(status[1]);
  }
  const results = new Map<string, string>();
  for (const line of scriptOutput.split("\n")) {
    const match = /^RESULT (\S+)(?: (.*))?$/.exec(line);
    if (match?.[1]) results.set(match[1], match[2] ?? "");
  }
  return { scriptOutput, scriptStatus, results };
}

/** The QEMU command line for one boot (without the per-boot initrd path decided by bootGuest). */
export function guestQemuArgs(
  options: Omit<BootGuestOptions, "script" | "files" | "onConsole" | "signal">,
): string[] {
  const memoryMiB = options.memoryMiB ?? DEFAULT_GUEST_MEMORY_MIB;
  const append = ["console=ttyS0", "quiet", "panic=-1", options.append ?? ""].join(" ").trim();
  return [
    "-nodefaults",
    "-no-user-config",
    "-machine",
    "q35",
    "-accel",
    "tcg",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-no-reboot",
    "-m",
    `${memoryMiB}M`,
    "-object",
    `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
    "-numa",
    "node,memdev=mem",
    "-kernel",
    options.kernel,
    "-append",
    append,
    ...(options.qemuArgs ?? []),
  ];
}

/**
 * Boots the guest, runs `script` in it and resolves when QEMU exits: by itself after /init powers
 * off, or killed at `timeoutMs` / on abort. Rejects only when QEMU cannot be spawned.
 */
export async function bootGuest(options: BootGuestOptions): Promise<GuestRun> {
  const scratch = mkdtempSync(join(tmpdir(), "vdi2c-guest-"));
  try {
    // Concatenated cpio archives are one initramfs to the kernel; the later one adds the script.
    const initrd = join(scratch, "initrd.cpio");
    const base = readFileSync(options.initrd);
    if (base.length % 4 !== 0) throw new RangeError(`${options.initrd}: length not 4-aligned`);
    writeFileSync(initrd, Buffer.concat([base, scriptArchive(options.script, options.files)]));
    const args = [...guestQemuArgs(options), "-initrd", initrd];
    return await runQemu(options, args);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function runQemu(options: BootGuestOptions, args: string[]): Promise<GuestRun> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_GUEST_TIMEOUT_MS;
  const started = performance.now();
  return new Promise<GuestRun>((resolve, reject) => {
    // stdin stays an open pipe that is never written: the stdio chardev then never sees EOF.
    const qemu = spawn(options.qemu ?? qemuBinary(), args, {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let consoleText = "";
    let pendingCarriageReturn = false;
    let stderr = "";
    let bootMs: number | null = null;
    let timedOut = false;

    const kill = (): void => {
      if (qemu.exitCode === null && qemu.signalCode === null) {
        timedOut = true;
        qemu.kill("SIGKILL");
      }
    };
    const timer = setTimeout(kill, timeoutMs);
    options.signal?.addEventListener("abort", kill, { once: true });
    if (options.signal?.aborted) kill();

    qemu.stdout.setEncoding("utf8");
    qemu.stdout.on("data", (chunk: string) => {
      // A chunk may end between \r and \n; hold the \r back until the next chunk decides.
      let text = (pendingCarriageReturn ? "\r" : "") + chunk;
      pendingCarriageReturn = text.endsWith("\r");
      if (pendingCarriageReturn) text = text.slice(0, -1);
      text = text.replaceAll("\r\n", "\n");
      consoleText += text;
      if (bootMs === null && consoleText.includes(GUEST_MARKERS.booted)) {
        bootMs = Math.round(performance.now() - started);
      }
      options.onConsole?.(text);
    });
    qemu.stderr.setEncoding("utf8");
    qemu.stderr.on("data", (chunk: string) => {
      stderr += chunk;
    });
    const settle = (): void => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", kill);
    };
    qemu.on("error", (error) => {
      // Only a failed spawn rejects; a later error (a failed kill) leaves "close" to resolve.
      if (qemu.pid !== undefined) return;
      settle();
      reject(
        new GuestError("GUEST_SPAWN_FAILED", `cannot run QEMU: ${error.message}`, { cause: error }),
      );
    });
    qemu.on("close", (exitCode, signal) => {
      settle();
      if (pendingCarriageReturn) consoleText += "\r";
      resolve({
        exitCode,
        signal,
        timedOut,
        console: consoleText,
        stderr,
        bootMs,
        ...parseConsole(consoleText),
      });
    });
  });
}
