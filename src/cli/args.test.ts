// Tests for the command-line parser: defaults, each refusal on its own, address notation.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  commandArgs,
  fragmentArgs,
  RUST_README_ADAPTERS,
  RUST_README_COMMANDS,
  RUST_README_DEVICE_LISTS,
} from "../../test/helpers/rust-readme.js";
import { type CliCommand, type DaemonConfig, HELP, parseCommandLine, UsageError } from "./args.js";
import { renderHelp } from "./help.js";

/** The help on unbounded lines: each text whole, for phrase checks. */
const USAGE = renderHelp(HELP, Number.POSITIVE_INFINITY);

const ADAPTERS: Readonly<Record<string, number>> = { "Fake adapter three": 3, smbus: 7 };

function resolveAdapter(name: string): number {
  const n = ADAPTERS[name];
  if (n === undefined) throw new Error(`no adapter named "${name}"`);
  return n;
}

function parse(...argv: string[]): CliCommand {
  return parseCommandLine(argv, { resolveAdapter });
}

function run(...argv: string[]): DaemonConfig {
  const command = parse(...argv);
  assert.equal(command.kind, "run");
  return command.config;
}

function refused(code: string, argv: string[], messagePart?: RegExp): void {
  assert.throws(
    () => parse(...argv),
    (err: unknown) => {
      assert.ok(err instanceof UsageError, `expected UsageError, got ${String(err)}`);
      assert.equal(err.code, code);
      if (messagePart) assert.match(err.message, messagePart);
      return true;
    },
  );
}

const BASE = ["-s", "/tmp/vi2c.sock", "-l", "sim:0x50=24c02"];

describe("parseCommandLine defaults", () => {
  it("uses one socket, level info, server mode", () => {
    const config = run(...BASE);
    assert.equal(config.socketPath, "/tmp/vi2c.sock");
    assert.equal(config.socketCount, 1);
    assert.deepEqual(config.socketPaths, ["/tmp/vi2c.sock0"]);
    assert.equal(config.logLevel, "info");
    assert.equal(config.clientMode, false);
    assert.equal(config.deviceListText, "sim:0x50=24c02");
    assert.equal(config.deviceGroups.length, 1);
  });

  it("names sockets prefix0 .. prefixN-1 for --socket-count N", () => {
    const config = run(
      "--socket-path",
      "/run/x.sock",
      "--socket-count",
      "3",
      "-l",
      "sim:0x50=24c02",
    );
    assert.deepEqual(config.socketPaths, ["/run/x.sock0", "/run/x.sock1", "/run/x.sock2"]);
  });

  it("accepts --client, --log-level and --opt=value spelling", () => {
    const config = run(...BASE, "--client", "--log-level=trace");
    assert.equal(config.clientMode, true);
    assert.equal(config.logLevel, "trace");
  });

  it("returns help and version commands without needing other options", () => {
    assert.deepEqual(parse("-h"), { kind: "help" });
    assert.deepEqual(parse("--help"), { kind: "help" });
    assert.deepEqual(parse("--version"), { kind: "version" });
    assert.deepEqual(parse("-V"), { kind: "version" });
  });

  it("help text documents every option and gives examples", () => {
    for (const option of [
      "--socket-path",
      "--socket-count",
      "--device-list",
      "--client",
      "--log-level",
      "--config",
      "--control-socket",
    ]) {
      assert.ok(USAGE.includes(option), option);
    }
    assert.match(USAGE, /Examples:/);
  });
});

/** Adapter number (or "sim") and guest addresses of each group: what -l asked for. */
function deviceSummary(config: DaemonConfig): [number | "sim", number[]][] {
  return config.deviceGroups.map((group) => [
    group.bus.kind === "host" ? group.bus.adapter : "sim",
    group.devices.map((device) => device.addr),
  ]);
}

describe("clap's spellings: the Rust daemon's command lines run unchanged", () => {
  const resolveReadmeAdapter = (name: string): number => {
    const adapter = RUST_README_ADAPTERS[name];
    if (adapter === undefined) throw new Error(`no adapter named "${name}"`);
    return adapter;
  };
  const runReadme = (argv: string[]): DaemonConfig => {
    const command = parseCommandLine(argv, { resolveAdapter: resolveReadmeAdapter });
    assert.equal(command.kind, "run");
    return command.config;
  };

  it("runs the Rust README's examples verbatim", () => {
    const expected: [number | "sim", number[]][][] = [[[0, [32]]], [[0, [32]]]];
    RUST_README_COMMANDS.forEach((line, i) => {
      const config = runReadme(commandArgs(line));
      assert.equal(config.socketPath, "vi2c.sock", line);
      assert.equal(config.socketCount, 1, line);
      assert.deepEqual(config.socketPaths, ["vi2c.sock0"], line);
      assert.deepEqual(deviceSummary(config), expected[i], line);
    });
  });

  it("reads the Rust README's --device-list examples", () => {
    const expected: [number | "sim", number[]][][] = [
      [
        [0, [32, 21]],
        [1, [10, 23]],
      ],
      [
        [2, [32, 21]],
        [3, [10, 23]],
      ],
    ];
    RUST_README_DEVICE_LISTS.forEach((fragment, i) => {
      const config = runReadme(["-s", "vi2c.sock", ...fragmentArgs(fragment)]);
      assert.deepEqual(deviceSummary(config), expected[i], fragment);
    });
  });

  /** The five ways clap takes a value: -x V, -x=V, -xV, --long V, --long=V. */
  const spellings = (short: string, long: string, value: string): string[][] => [
    [short, value],
    [`${short}=${value}`],
    [`${short}${value}`],
    [long, value],
    [`${long}=${value}`],
  ];

  it("takes -s, -c and -l in every spelling clap takes", () => {
    for (const socket of spellings("-s", "--socket-path", "vi2c.sock")) {
      for (const count of spellings("-c", "--socket-count", "2")) {
        for (const list of spellings("-l", "--device-list", "3:0x50")) {
          const argv = [...socket, ...count, ...list];
          const config = run(...argv);
          assert.deepEqual(config.socketPaths, ["vi2c.sock0", "vi2c.sock1"], argv.join(" "));
          assert.deepEqual(deviceSummary(config), [[3, [0x50]]], argv.join(" "));
        }
      }
    }
  });

  it("strips one = after any short option with a value, as clap does", () => {
    assert.equal(run("-s==x", "-l", "sim:0x50=24c02").socketPath, "=x");
    assert.equal(run(...BASE, "-c=3").socketCount, 3);
    refused("USAGE_BAD_SOCKET_PATH", ["-s=", "-l", "3:0x50"], /--socket-path is empty/);
  });

  it("takes a separate value starting with - only as a number, or inline", () => {
    refused("USAGE_BAD_SOCKET_COUNT", [...BASE, "-c", "-1"], /--socket-count "-1"/);
    refused("USAGE_MISSING_VALUE", ["-s", "-l", "3:0x50"], /--socket-path needs a value/);
    assert.equal(run("--socket-path=-x", "-l", "3:0x50").socketPath, "-x");
    assert.equal(run("-s-x", "-l", "3:0x50").socketPath, "-x");
  });
});

describe("parseCommandLine device list", () => {
  it("reads decimal and 0x addresses to the same value", () => {
    const decimal = run("-s", "/tmp/a", "-l", "3:80");
    const hex = run("-s", "/tmp/a", "-l", "3:0x50");
    assert.deepEqual(decimal.deviceGroups, hex.deviceGroups);
    const group = decimal.deviceGroups[0];
    assert.deepEqual(group?.bus, { kind: "host", adapter: 3 });
    assert.deepEqual(
      group?.devices.map((d) => d.addr),
      [0x50],
    );
  });

  it("resolves an adapter given by name, spaces included", () => {
    const config = run("-s", "/tmp/a", "-l", "Fake adapter three:0x50:0x51");
    assert.deepEqual(config.deviceGroups[0]?.bus, {
      kind: "host",
      adapter: 3,
      name: "Fake adapter three",
    });
    assert.deepEqual(
      config.deviceGroups[0]?.devices.map((d) => d.addr),
      [0x50, 0x51],
    );
  });

  it("reads several groups, host and sim", () => {
    const config = run("-s", "/tmp/a", "-l", "3:32:41,sim:0x50=24c02");
    assert.deepEqual(
      config.deviceGroups.map((g) => g.bus.kind),
      ["host", "sim"],
    );
    assert.equal(config.deviceGroups[1]?.devices[0]?.model, "24c02");
  });

  const badLists: [string, string][] = [
    ["empty list", ""],
    ["address above 0x7f", "3:0x80"],
    ["decimal address above 127", "3:128"],
    ["duplicate address on one adapter", "3:0x50:80"],
    ["duplicate address across groups", "3:0x50,sim:0x50=24c02"],
    ["duplicate adapter", "3:0x50,3:0x51"],
    ["unknown adapter name", "no such adapter:0x50"],
    ["non-number address", "3:abc"],
    ["adapter without addresses", "3"],
    ["unknown sim model", "sim:0x50=nosuchchip"],
  ];
  for (const [what, list] of badLists) {
    it(`refuses ${what} (exit status 2 via USAGE_BAD_DEVICE_LIST)`, () => {
      refused("USAGE_BAD_DEVICE_LIST", ["-s", "/tmp/a", "-l", list], /--device-list/);
    });
  }

  it("keeps the parser's explanation for an unknown adapter name", () => {
    refused(
      "USAGE_BAD_DEVICE_LIST",
      ["-s", "/tmp/a", "-l", "missing:0x50"],
      /no adapter named "missing"/,
    );
  });
});

describe("parseCommandLine refusals", () => {
  it("refuses an unknown option", () => {
    refused("USAGE_UNKNOWN_OPTION", [...BASE, "--bogus"], /--bogus/);
  });
  it("refuses a positional argument", () => {
    refused("USAGE_UNEXPECTED_ARGUMENT", [...BASE, "extra"], /extra/);
  });
  it("refuses an option without its value", () => {
    refused("USAGE_MISSING_VALUE", ["-l", "sim:0x50=24c02", "-s"]);
  });
  it("refuses a value given to --client", () => {
    refused("USAGE_UNEXPECTED_VALUE", [...BASE, "--client=yes"], /--client takes no value/);
  });
  it("refuses a repeated option", () => {
    refused("USAGE_REPEATED_OPTION", [...BASE, "-s", "/tmp/other"], /socket-path/);
  });
  it("refuses a missing --socket-path", () => {
    refused("USAGE_MISSING_OPTION", ["-l", "sim:0x50=24c02"], /socket-path/);
  });
  it("refuses a missing --device-list", () => {
    refused("USAGE_MISSING_OPTION", ["-s", "/tmp/a"], /device-list/);
  });
  for (const count of ["0", "-1", "1.5", "two", "", "0x2", "257", "99999999999999999999"]) {
    it(`refuses --socket-count "${count}"`, () => {
      refused("USAGE_BAD_SOCKET_COUNT", [...BASE, `--socket-count=${count}`], /socket-count/);
    });
  }
  it("--user and --group: names or numbers; --group alone or an empty or odd value is refused", () => {
    assert.equal(run(...BASE).runAs, undefined);
    assert.deepEqual(run(...BASE, "--user", "vi2c").runAs, { user: "vi2c", group: undefined });
    assert.deepEqual(run(...BASE, "--user", "1234", "--group", "i2c").runAs, {
      user: "1234",
      group: "i2c",
    });
    refused("USAGE_BAD_USER", [...BASE, "--group", "i2c"], /--group needs --user/);
    for (const bad of ["", "a:b", "a b"]) {
      refused("USAGE_BAD_USER", [...BASE, `--user=${bad}`], /--user/);
      refused("USAGE_BAD_USER", [...BASE, "--user", "x", `--group=${bad}`], /--group/);
    }
  });
  it("accepts the largest socket count", () => {
    assert.equal(run(...BASE, "-c", "256").socketPaths.length, 256);
  });
  it("refuses an empty socket path", () => {
    refused("USAGE_BAD_SOCKET_PATH", ["-s", "", "-l", "sim:0x50=24c02"]);
  });
  it("refuses a socket path naming a directory", () => {
    refused("USAGE_BAD_SOCKET_PATH", ["-s", "/tmp/", "-l", "sim:0x50=24c02"], /directory/);
  });
  it("refuses a socket path too long for a Unix socket", () => {
    refused(
      "USAGE_BAD_SOCKET_PATH",
      ["-s", `/tmp/${"x".repeat(110)}`, "-l", "sim:0x50=24c02"],
      /107/,
    );
  });
  it("refuses an unknown log level, listing the valid ones", () => {
    refused(
      "USAGE_BAD_LOG_LEVEL",
      [...BASE, "--log-level", "loud"],
      /error, warn, info, debug, trace/,
    );
  });
});

describe("option errors in the daemon's words", () => {
  // Each bad command line and the option (or word) its message must name.
  const cases: [string[], string][] = [
    [[...BASE, "-c", "-1"], "--socket-count"],
    [[...BASE, "--socket-count=-1"], "--socket-count"],
    [[...BASE, "-c", "-x"], "--socket-count"],
    [["-l", "3:0x50", "-s"], "--socket-path"],
    [["-s", "-l", "3:0x50"], "--socket-path"],
    [["-s", "--", "-l", "3:0x50"], "--socket-path"],
    [[...BASE, "--log-level"], "--log-level"],
    [[...BASE, "--log-level", "-v"], "--log-level"],
    [[...BASE, "--allow-peer-uid"], "--allow-peer-uid"],
    [[...BASE, "--bogus"], "--bogus"],
    [[...BASE, "--bogus=1"], "--bogus"],
    [[...BASE, "-x"], "-x"],
    [[...BASE, "---socket-path"], "---socket-path"],
    [[...BASE, "-h=x"], "-h=x"],
    [[...BASE, "-Vx"], "-Vx"],
    [[...BASE, "--client=yes"], "--client"],
    [[...BASE, "--trace=1"], "--trace"],
    [[...BASE, "--fd-store="], "--fd-store"],
    [["--help=yes"], "--help"],
    [["--print-capabilities=1"], "--print-capabilities"],
    [[...BASE, "x"], '"x"'],
    [[...BASE, "-"], '"-"'],
    [[...BASE, "--", "-c"], '"-c"'],
    [[...BASE, "-c", "1", "--socket-count=2"], "--socket-count"],
  ];
  for (const [argv, named] of cases) {
    it(`${argv.join(" ")}: names ${named}, no parser wording`, () => {
      assert.throws(
        () => parse(...argv),
        (err: unknown) => {
          assert.ok(err instanceof UsageError, `expected UsageError, got ${String(err)}`);
          assert.ok(err.message.includes(named), err.message);
          assert.doesNotMatch(err.message, /ambiguous|Option '|To specify|ERR_/);
          return true;
        },
      );
    });
  }
});

describe("parseCommandLine trace and capture limits", () => {
  it("takes sizes with K/M/G suffixes and file counts, only when given", () => {
    const config = run(
      ...[
        ...BASE,
        "--pcap",
        "/var/log/i2c.pcap",
        "--pcap-max-size",
        "16M",
        "--pcap-max-files",
        "3",
      ],
      ...[
        "--trace-file",
        "/var/log/i2c.trace",
        "--trace-max-size",
        "512k",
        "--trace-max-files",
        "1",
      ],
    );
    assert.deepEqual(
      [config.pcapMaxSize, config.pcapMaxFiles, config.traceMaxSize, config.traceMaxFiles],
      [16 * 1024 * 1024, 3, 512 * 1024, 1],
    );
    const defaults = run(...BASE, "--pcap", "x.pcap", "--trace-file", "x.trace");
    assert.deepEqual(
      [defaults.pcapMaxSize, defaults.pcapMaxFiles, defaults.traceMaxSize, defaults.traceMaxFiles],
      [undefined, undefined, undefined, undefined],
      "the writers apply their defaults (64 MiB x 2 files)",
    );
  });

  for (const [what, argv] of [
    ["a zero size", ["--pcap", "x", "--pcap-max-size", "0"]],
    ["a size that is not a number", ["--trace-file", "x", "--trace-max-size", "big"]],
    ["0 files", ["--pcap", "x", "--pcap-max-files", "0"]],
    ["101 files", ["--trace-file", "x", "--trace-max-files", "101"]],
    ["a pcap limit without --pcap", ["--pcap-max-files", "2"]],
    ["a trace limit without --trace-file", ["--trace", "--trace-max-size", "1M"]],
  ] as const) {
    it(`refuses ${what}`, () => {
      refused("USAGE_BAD_TRACE", [...BASE, ...argv]);
    });
  }
});

describe("parseCommandLine --config, --control-socket and control", () => {
  it("takes --config instead of -l, or both", () => {
    const only = run("-s", "/tmp/v.sock", "--config", "devices.json");
    assert.equal(only.configFile, "devices.json");
    assert.deepEqual(only.deviceGroups, []);
    assert.equal(only.deviceListText, "");
    const both = run(...BASE, "--config", "devices.json");
    assert.equal(both.deviceGroups.length, 1);
    assert.equal(both.configFile, "devices.json");
    assert.equal(run(...BASE).configFile, undefined);
  });

  it("refuses neither -l nor --config, and an empty --config", () => {
    refused("USAGE_MISSING_OPTION", ["-s", "/tmp/v.sock"], /--device-list \(-l\) or --config/);
    refused("USAGE_BAD_CONFIG_PATH", ["-s", "/tmp/v.sock", "--config", ""]);
  });

  it("takes --control-socket and checks it like a socket path", () => {
    assert.equal(run(...BASE, "--control-socket", "/tmp/c.sock").controlSocket, "/tmp/c.sock");
    assert.equal(run(...BASE).controlSocket, undefined);
    refused("USAGE_BAD_SOCKET_PATH", [...BASE, "--control-socket", `/tmp/${"x".repeat(110)}`]);
    refused("USAGE_BAD_SOCKET_PATH", [...BASE, "--control-socket="], /--control-socket is empty/);
  });

  it("takes --control-idle-timeout in seconds, fractions allowed, only with --control-socket", () => {
    const control = [...BASE, "--control-socket", "/tmp/c.sock"];
    assert.equal(run(...control).controlIdleTimeoutMs, undefined);
    assert.equal(run(...control, "--control-idle-timeout", "0.5").controlIdleTimeoutMs, 500);
    assert.equal(
      run(...control, "--control-idle-timeout", "86400").controlIdleTimeoutMs,
      86_400_000,
    );
    for (const bad of ["0", "0.0", "-1", "1e3", "abc", "", "86401", "0x10"]) {
      refused(
        "USAGE_BAD_CONTROL_IDLE_TIMEOUT",
        [...control, `--control-idle-timeout=${bad}`],
        /not a number of seconds above 0 and up to 86400/,
      );
    }
    refused(
      "USAGE_BAD_CONTROL_IDLE_TIMEOUT",
      [...BASE, "--control-idle-timeout", "5"],
      /needs --control-socket/,
    );
  });

  it("accepts every built-in model in the sim shorthand, mixed with host adapters", () => {
    const config = run("-s", "/tmp/v.sock", "-l", "sim:0x50=24c32:0x51=24c16,3:0x20");
    assert.deepEqual(
      config.deviceGroups.flatMap((g) => g.devices.map((d) => d.model ?? "host")),
      ["24c32", "24c16", "host"],
    );
  });

  it("parses control PATH CMD... as the control client", () => {
    assert.deepEqual(parse("control", "/tmp/c.sock", "get", "0x48", "temperature"), {
      kind: "control",
      socketPath: "/tmp/c.sock",
      words: ["get", "0x48", "temperature"],
    });
    refused("USAGE_BAD_CONTROL_COMMAND", ["control", "/tmp/c.sock"], /usage: control/);
    refused("USAGE_BAD_CONTROL_COMMAND", ["control"]);
  });
});

describe("the daemon's own paths are distinct", () => {
  it("refuses a control socket on one of the vhost-user sockets, however spelled", () => {
    refused(
      "USAGE_SOCKET_CONFLICT",
      ["-s", "x.sock", "-c", "2", "-l", "3:0x50", "--control-socket", "x.sock1"],
      /--control-socket "x.sock1" is the same file as the vhost-user socket "x.sock1"/,
    );
    refused(
      "USAGE_SOCKET_CONFLICT",
      ["-s", "x.sock", "-l", "3:0x50", "--control-socket", `${process.cwd()}/./x.sock0`],
      /--control-socket/,
    );
    refused(
      "USAGE_SOCKET_CONFLICT",
      [...BASE, "--client", "--control-socket", "/tmp/vi2c.sock0"],
      /--control-socket/,
    );
  });

  it("refuses a trace or capture file on a socket or on each other, rotated names included", () => {
    refused(
      "USAGE_SOCKET_CONFLICT",
      [...BASE, "--control-socket", "/tmp/c", "--pcap", "/tmp/c"],
      /--pcap "\/tmp\/c" is the same file as --control-socket "\/tmp\/c"/,
    );
    refused(
      "USAGE_SOCKET_CONFLICT",
      [...BASE, "--trace-file", "/tmp/vi2c.sock0"],
      /--trace-file .* the vhost-user socket/,
    );
    refused(
      "USAGE_SOCKET_CONFLICT",
      [...BASE, "--trace-file", "/tmp/t", "--pcap", "/tmp/t.1"],
      /--pcap "\/tmp\/t.1" is the same file as --trace-file's rotated file "\/tmp\/t.1"/,
    );
    refused(
      "USAGE_SOCKET_CONFLICT",
      [...BASE, "--pcap", "/tmp/p", "--pcap-max-files", "3", "--control-socket", "/tmp/p.2"],
      /--control-socket/,
    );
  });

  it("accepts distinct paths, and files past the last rotated one", () => {
    const config = run(
      ...BASE,
      "--control-socket",
      "/tmp/vi2c.sock",
      "--trace-file",
      "/tmp/t",
      "--trace-max-files",
      "1",
      "--pcap",
      "/tmp/t.1",
    );
    assert.equal(config.controlSocket, "/tmp/vi2c.sock");
    assert.equal(config.pcap, "/tmp/t.1");
    const fromFds = parseCommandLine(
      ["--socket-fd", "3", "-l", "3:0x50", "--control-socket", "fd:3"],
      {
        resolveAdapter,
      },
    );
    assert.equal(fromFds.kind, "run");
  });
});

describe("sockets from a service manager", () => {
  const LIST = ["-l", "sim:0x50=24c02"];

  it("--socket-fd, repeatable, gives the socket indexes in order", () => {
    const config = run("--socket-fd", "5", "--socket-fd=3", ...LIST);
    assert.deepEqual(config.socketFds, [5, 3]);
    assert.equal(config.socketCount, 2);
    assert.deepEqual(config.socketPaths, ["fd:5", "fd:3"]);
  });

  it("inherited fds serve when neither -s nor --socket-fd is given; -s wins otherwise", () => {
    const inheritedFds = [3, 4, 5];
    const fromEnv = parseCommandLine(LIST, { resolveAdapter, inheritedFds });
    assert.equal(fromEnv.kind, "run");
    assert.deepEqual(fromEnv.kind === "run" && fromEnv.config.socketFds, [3, 4, 5]);
    const explicit = parseCommandLine(["--socket-fd", "4", ...LIST], {
      resolveAdapter,
      inheritedFds,
    });
    assert.deepEqual(explicit.kind === "run" && explicit.config.socketFds, [4]);
    const created = parseCommandLine(BASE, { resolveAdapter, inheritedFds });
    assert.equal(created.kind === "run" && created.config.socketFds, undefined);
  });

  it("refuses conflicting or bad socket sources", () => {
    refused("USAGE_SOCKET_CONFLICT", ["--socket-fd", "3", ...BASE], /exclude/);
    refused("USAGE_SOCKET_CONFLICT", ["--socket-fd", "3", "--client", ...LIST], /--client/);
    refused("USAGE_SOCKET_CONFLICT", ["--socket-fd", "3", "--socket-mode", "0660", ...LIST]);
    refused("USAGE_BAD_SOCKET_FD", ["--socket-fd", "2", ...LIST], /--socket-fd/);
    refused("USAGE_BAD_SOCKET_FD", ["--socket-fd", "x", ...LIST]);
    refused("USAGE_BAD_SOCKET_FD", ["--socket-fd", "3", "--socket-fd", "3", ...LIST], /twice/);
    refused("USAGE_BAD_SOCKET_COUNT", ["--socket-fd", "3", "-c", "2", ...LIST], /does not match/);
    refused("USAGE_MISSING_OPTION", LIST, /socket-path/);
  });

  it("--log-format plain (default) or json; --print-capabilities", () => {
    assert.equal(run(...BASE).logFormat, "plain");
    assert.equal(run(...BASE, "--log-format", "json").logFormat, "json");
    refused("USAGE_BAD_LOG_FORMAT", [...BASE, "--log-format", "xml"], /plain, json/);
    assert.deepEqual(parse("--print-capabilities"), { kind: "capabilities" });
  });

  it("--handshake-timeout in seconds (decimals, 0 = no limit); absent leaves the default", () => {
    assert.equal(run(...BASE).handshakeTimeoutMs, undefined);
    assert.equal(run(...BASE, "--handshake-timeout", "30").handshakeTimeoutMs, 30_000);
    assert.equal(run(...BASE, "--handshake-timeout", "0.25").handshakeTimeoutMs, 250);
    assert.equal(run(...BASE, "--handshake-timeout", "0").handshakeTimeoutMs, 0);
    for (const bad of ["", "-1", "1e3", "ten", "2147484"]) {
      refused("USAGE_BAD_HANDSHAKE_TIMEOUT", [...BASE, `--handshake-timeout=${bad}`], /seconds/);
    }
    refused(
      "USAGE_BAD_HANDSHAKE_TIMEOUT",
      [...BASE, "--client", "--handshake-timeout", "5"],
      /--client/,
    );
    assert.ok(USAGE.includes("--handshake-timeout"));
  });

  it("socket access: the control socket's own mode and group, peers allowed, client path checks", () => {
    const defaults = run(...BASE);
    assert.equal(defaults.controlSocketMode, undefined);
    assert.deepEqual(defaults.allowPeerUids, []);
    assert.deepEqual(defaults.allowPeerGids, []);
    assert.equal(defaults.clientUnsafePath, false);
    const config = run(
      ...BASE,
      "--control-socket",
      "/run/vi2c.ctl",
      "--control-socket-mode",
      "0660",
      "--control-socket-group",
      "operators",
      "--allow-peer-uid",
      "libvirt-qemu",
      "--allow-peer-uid",
      "1234",
      "--allow-peer-gid",
      "kvm",
    );
    assert.equal(config.controlSocketMode, 0o660);
    assert.equal(config.controlSocketGroup, "operators");
    assert.equal(config.socketMode, undefined, "never taken from the control socket's options");
    assert.deepEqual(config.allowPeerUids, ["libvirt-qemu", "1234"]);
    assert.deepEqual(config.allowPeerGids, ["kvm"]);
    assert.equal(run("--client", ...BASE, "--client-unsafe-path").clientUnsafePath, true);
    refused("USAGE_MISSING_OPTION", [...BASE, "--control-socket-mode", "0600"], /--control-socket/);
    refused("USAGE_MISSING_OPTION", [...BASE, "--control-socket-group", "x"], /--control-socket/);
    refused("USAGE_MISSING_OPTION", [...BASE, "--client-unsafe-path"], /--client/);
    refused(
      "USAGE_BAD_SOCKET_MODE",
      [...BASE, "--control-socket", "/c", "--control-socket-mode", "0400"],
      /--control-socket-mode/,
    );
    refused("USAGE_BAD_PEER", [...BASE, "--allow-peer-uid", "a:b"], /--allow-peer-uid/);
    refused("USAGE_BAD_PEER", [...BASE, "--allow-peer-gid", ""], /--allow-peer-gid/);
  });

  it("the help names the new options and the control socket's stats", () => {
    for (const text of [
      "--socket-fd",
      "--log-format",
      "--print-capabilities",
      "stats",
      "LISTEN_FDS",
      "--control-socket-mode",
      "--control-socket-group",
      "--allow-peer-uid",
      "--allow-peer-gid",
      "--client-unsafe-path",
    ]) {
      assert.ok(USAGE.includes(text), text);
    }
  });
});

describe("--allow-unsealed-memory", () => {
  it("is off by default; the help says what it costs", () => {
    assert.equal(run(...BASE).allowUnsealedMemory, false);
    assert.equal(run(...BASE, "--allow-unsealed-memory").allowUnsealedMemory, true);
    refused("USAGE_UNEXPECTED_VALUE", [...BASE, "--allow-unsealed-memory=yes"]);
    assert.match(USAGE, /--allow-unsealed-memory/);
    assert.match(USAGE, /kills the daemon, and every guest's service with it/);
  });
});

describe("--packed-ring", () => {
  it("on by default; on or off; anything else refused; the help says what each QEMU does with it", () => {
    assert.equal(run(...BASE).packedRing, true);
    assert.equal(run(...BASE, "--packed-ring", "on").packedRing, true);
    assert.equal(run(...BASE, "--packed-ring=off").packedRing, false);
    for (const bad of ["", "yes", "OFF", "0"]) {
      refused("USAGE_BAD_PACKED_RING", [...BASE, `--packed-ring=${bad}`], /expected on or off/);
    }
    refused("USAGE_MISSING_VALUE", [...BASE, "--packed-ring"]);
    refused("USAGE_REPEATED_OPTION", [...BASE, "--packed-ring", "on", "--packed-ring", "off"]);
    assert.match(USAGE, /--packed-ring <on\|off>/);
    assert.match(USAGE, /QEMU 7\.2 asks by its own/);
  });
});
