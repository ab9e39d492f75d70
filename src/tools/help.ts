/**
 * vi2c's help as data: the general help ({@link VI2C_HELP}, rendered by src/cli/help.ts for `--help`
 * and the vi2c(1) man page) and each command's usage, worded as the i2c-tools program it follows.
 * @module
 */

import { type HelpDocument, renderHelp, term } from "../cli/help.js";
import { type CommandName, DEFAULT_QUEUE_SIZE, DEFAULT_TIMEOUT_MS } from "./args.js";

export const VI2C_HELP: HelpDocument = {
  name: "vi2c",
  summary: "i2c-tools for a vhost-user-i2c backend's socket, no VM needed",
  synopsis: [
    "vi2c [--socket PATH] [--packed] [--timeout MS] [--queue-size N] COMMAND [ARGS]",
    "vi2c help [COMMAND]",
    "vi2c --help | --version",
  ],
  description: [
    "Talks to a vhost-user-i2c backend's socket as a VM would; no VM needed. vi2c plays the VMM and",
    "the guest's i2c-virtio driver against any vhost-user-i2c backend.",
  ],
  options: [
    term(
      "--socket PATH",
      "the backend's socket; without it, SOCKET comes first (vi2c SOCKET detect -y)",
      "or where the i2c-tools program takes I2CBUS",
    ),
    term("--packed", "use a packed virtqueue when the backend offers one"),
    term("--timeout MS", `deadline for each reply and transfer (default ${DEFAULT_TIMEOUT_MS})`),
    term("--queue-size N", `virtqueue size (power of two, default ${DEFAULT_QUEUE_SIZE})`),
    term("-h, --help", "show this help; vi2c help COMMAND shows a command's usage"),
    term("-V, --version", "show the version"),
  ],
  sections: [
    {
      title: "Commands",
      body: [
        "Arguments and output as the i2c-tools program in brackets, SOCKET in place of I2CBUS.",
        term("detect [-y] [-a] [-q|-r|-F] SOCKET [FIRST LAST]", "(i2cdetect)"),
        term(
          "dump [-y] [-a] [-r FIRST-LAST] SOCKET ADDRESS [MODE]",
          "(i2cdump; MODE b, w, W, c, i)",
        ),
        term("get [-y] [-a] SOCKET ADDRESS [REG [MODE [LENGTH]]]", "(i2cget; MODE b, w, c, i)"),
        term(
          "set [-y] [-a] [-r] [-m MASK] SOCKET ADDRESS REG [VALUE]... [MODE]",
          "(i2cset; MODE c, b, w, i, s)",
        ),
        term("transfer [-y] [-v] [-a] SOCKET DESC [DATA] [DESC [DATA]]...", "(i2ctransfer)"),
        term("info SOCKET", "the features the backend offers and its queue count"),
        term(
          "snapshot [-y] [-a] [-r FIRST-LAST] [--skip REGS] [--read-only REGS] [--as EEPROM] [--entry] [-o FILE] SOCKET ADDRESS [MODE]",
          "reads a chip as i2cdump does (MODE b, w, i) and writes a config file whose register-file",
          "entry (or, with --as, 24Cxx entry) answers as the chip did: vhost-device-i2c --config FILE",
          "serves it. --skip registers are never touched; vi2c help snapshot says more",
        ),
      ],
    },
    {
      title: "One front-end per socket",
      body: [
        "A backend socket serves one front-end at a time. While a VM (or another vi2c) is connected, the",
        "daemon tells vi2c why it refuses, and vi2c prints it. To inspect a bus while a VM runs, start",
        "vhost-device-i2c with -c 2 and give vi2c the second socket (PATH1). SOCKET is the socket itself",
        "(PATH0), not the daemon's -s prefix.",
      ],
    },
    {
      title: "Exit status",
      body: [
        term("0", "done, or aborted at the prompt; --help, --version"),
        term("1", "a transfer or the backend failed"),
        term("2", "the command line cannot be run"),
      ],
    },
  ],
  examples: [
    {
      command: "vi2c detect -y /tmp/vi2c.sock0",
      text: "the addresses that answer on the socket's bus",
    },
    { command: "vi2c dump -y /tmp/vi2c.sock0 0x50", text: "the 256 bytes of the EEPROM at 0x50" },
    {
      command: "vi2c snapshot -y --skip 0x10-0x1f -o board.json /tmp/vi2c.sock0 0x48 w",
      text: "capture the chip at 0x48 without touching 0x10-0x1f; vhost-device-i2c --config board.json serves the copy",
    },
    {
      command: "vi2c transfer -y /tmp/vi2c.sock0 w1@0x50 0x00 r8",
      text: "write the offset 0x00, then read 8 bytes, in one transfer",
    },
  ],
  seeAlso: [
    "vhost-device-i2c(1)",
    "i2cdetect(8)",
    "i2cdump(8)",
    "i2cget(8)",
    "i2cset(8)",
    "i2ctransfer(8)",
  ],
};

/** Each command's usage, worded as the i2c-tools program it follows. */
export const COMMAND_USAGE: Readonly<Record<CommandName, string>> = {
  detect: `Usage: vi2c detect [-y] [-a] [-q|-r] SOCKET [FIRST LAST]
       vi2c detect -F SOCKET
  If provided, FIRST and LAST limit the probing range.
`,
  dump: `Usage: vi2c dump [-y] [-r first-last] [-a] SOCKET ADDRESS [MODE]
  ADDRESS is an integer (0x08 - 0x77, or 0x00 - 0x7f if -a is given)
  MODE is one of:
    b (byte, default)
    w (word)
    W (word on even register addresses)
    i (I2C block)
    c (consecutive byte)
`,
  get: `Usage: vi2c get [-y] [-a] SOCKET CHIP-ADDRESS [DATA-ADDRESS [MODE [LENGTH]]]
  ADDRESS is an integer (0x08 - 0x77, or 0x00 - 0x7f if -a is given)
  MODE is one of:
    b (read byte data, default)
    w (read word data)
    c (write byte/read byte)
    i (read I2C block data)
  LENGTH is the I2C block data length (between 1 and 32, default 32)
`,
  set: `Usage: vi2c set [-y] [-m MASK] [-r] [-a] SOCKET CHIP-ADDRESS DATA-ADDRESS
         [VALUE] ... [MODE]
  ADDRESS is an integer (0x08 - 0x77, or 0x00 - 0x7f if -a is given)
  MODE is one of:
    c (byte, no value)
    b (byte data, default)
    w (word data)
    i (I2C block data)
    s (SMBus block data)
`,
  transfer: `Usage: vi2c transfer [-y] [-v] [-a] SOCKET DESC [DATA] [DESC [DATA]]...
  DESC describes the transfer in the form: {r|w}LENGTH[@address]
    1) read/write-flag 2) LENGTH (range 0-65535)
    3) I2C address (use last one if omitted)
  DATA are LENGTH bytes for a write message. They can be shortened by a suffix:
    = (keep value constant until LENGTH)
    + (increase value by 1 until LENGTH)
    - (decrease value by 1 until LENGTH)
    p (use pseudo random generator until LENGTH with value as seed)

Example (read 8 byte at offset 0x64 from EEPROM at 0x50):
  # vi2c transfer -y SOCKET w1@0x50 0x64 r8
Example (same EEPROM, at offset 0x42 write 0xff 0xfe ... 0xf0):
  # vi2c transfer -y SOCKET w17@0x50 0x42 0xff-
`,
  snapshot: `Usage: vi2c snapshot [-y] [-a] [-r first-last] [--skip REGS] [--read-only REGS]
         [--entry] [-o FILE] SOCKET ADDRESS [MODE]
       vi2c snapshot [-y] [-a] --as EEPROM [--entry] [-o FILE] SOCKET ADDRESS
  Reads the chip at ADDRESS as i2cdump does and writes JSON that reproduces it:
  a config file {"devices": [ENTRY]} (vhost-device-i2c --config FILE serves it),
  or with --entry the device entry alone. ENTRY is a register-file model: the
  value read most often is its default, the others are listed; registers that
  did not answer are left at the default and named on stderr.
  ADDRESS is an integer (0x08 - 0x77, or 0x00 - 0x7f if -a is given)
  MODE is one of:
    b (byte data, default)
    w (word data: 2-byte registers, littleEndian as SMBus words go on the wire)
    i (I2C block data, at most 32 bytes a read)
  -r first-last   read only these registers (the entry's size ends at last)
  --skip REGS     never touch these registers (clear-on-read, FIFOs), e.g.
                  0x10-0x1f,0x40; they are left at the default
  --read-only REGS  mark these registers readOnly in the entry
  --as EEPROM     the chip is a 24Cxx EEPROM (24c01 ... 24c512): read its whole
                  memory sequentially and write that model with "initial"
  --entry         write the device entry alone, not a whole config file
  -o FILE, --output FILE  write the JSON to FILE instead of stdout
`,
  info: `Usage: vi2c info SOCKET
  Shows the virtio and vhost-user protocol features the backend offers and its
  queue count.
`,
};

/** The usage for `topic` (null: the general help, filled to `width` columns). */
export function usageText(topic: CommandName | null, width: number): string {
  return topic === null ? renderHelp(VI2C_HELP, width) : COMMAND_USAGE[topic];
}
