// ControlServer over a real Unix socket with fake devices: commands, errors, abusive clients,
// concurrent clients, socket file rules. Also runControlCommand's exit statuses.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { scaled } from "../../test/helpers/time.js";
import type { DeviceDirectory } from "../config/devices.js";
import { ChipFaults } from "../i2c/faults.js";
import type { SimDevice } from "../i2c/model.js";
import { createLogger, silentLogger } from "../log.js";
import { SocketFileError } from "../sys/socket-file.js";
import { UnixListener } from "../sys/unix-socket.js";
import { describeChips, inProcessChips } from "./chip-host.js";
import { chipAccess } from "./chips.js";
import { ControlClient, runControlCommand } from "./client.js";
import { MAX_LINE_BYTES } from "./protocol.js";
import { ControlServer, handleLine } from "./server.js";

class RefusedValue extends Error {
  readonly code = "MODEL_OPTION";
}

/** A sensor with a settable temperature, a read-only id, and 256 bytes of memory. */
function fakeDevice(): SimDevice & {
  bytes: Uint8Array;
  temperature: number;
  failing: boolean;
} {
  const device = {
    bytes: new Uint8Array(256),
    temperature: 25,
    failing: true,
    targets: [],
    properties: {
      temperature: {
        description: "°C",
        get: () => device.temperature,
        set(value: string) {
          const t = Number(value);
          if (!Number.isFinite(t) || t < -55 || t > 125) {
            throw new RefusedValue(`temperature ${value} is outside -55..125`);
          }
          device.temperature = t;
        },
      },
      id: { description: "chip id", get: () => "fake" },
      broken: {
        description: "fails while `failing` is set",
        get: (): number => {
          if (device.failing) throw new TypeError("model bug");
          return 1;
        },
      },
    },
    memory: {
      size: 256,
      read: (offset: number, length: number) => device.bytes.slice(offset, offset + length),
      write: (offset: number, data: Uint8Array) => device.bytes.set(data, offset),
    },
  };
  return device;
}

/** A raw client socket (no reply parsing): the test decides when it reads. */
function connect(path: string) {
  const socket = createConnection(path);
  socket.on("error", () => {});
  return socket;
}

async function waitFor(condition: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + scaled(ms);
  while (!condition()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function collectingLogger() {
  const lines: string[] = [];
  return { lines, logger: createLogger("info", { write: (line: string) => lines.push(line) }) };
}

describe("ControlServer", () => {
  let dir: string;
  let path: string;
  let sensor: ReturnType<typeof fakeDevice>;
  let directory: DeviceDirectory;
  let server: ControlServer;
  let log: ReturnType<typeof collectingLogger>;
  const chips = inProcessChips(() => directory);

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "control-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach((t) => {
    path = join(dir, `${t.name.replace(/\W+/g, "_").slice(0, 40)}.sock`);
    sensor = fakeDevice();
    directory = [
      {
        address: 0x48,
        faults: new ChipFaults(0x48),
        model: "fake-sensor",
        device: sensor,
        key: "k1",
        sockets: [0],
      },
      {
        address: 0x50,
        faults: new ChipFaults(0x50),
        model: "plain",
        device: { targets: [] },
        key: "k2",
        sockets: [0],
      },
    ];
    log = collectingLogger();
    server = ControlServer.listen(path, chips, { logger: log.logger });
  });
  afterEach(() => server.close());

  async function ask(line: string): Promise<string> {
    const client = await ControlClient.connect(path);
    try {
      return await client.request(line);
    } finally {
      client.close();
    }
  }

  it("creates the socket file with mode 0600 and removes it on close", () => {
    const stat = statSync(path);
    assert.ok(stat.isSocket());
    assert.equal(stat.mode & 0o777, 0o600);
    server.close();
    assert.equal(statSync(path, { throwIfNoEntry: false }), undefined);
    server.close();
  });

  it("list shows address, model, property values and memory size", async () => {
    sensor.failing = false;
    const reply = await ask("list");
    assert.match(reply, /^ok \[/);
    assert.deepEqual(JSON.parse(reply.slice(3)), [
      {
        name: "0x48",
        address: "0x48",
        guests: [0],
        model: "fake-sensor",
        properties: { temperature: 25, id: "fake", broken: 1 },
        memorySize: 256,
      },
      {
        name: "0x50",
        address: "0x50",
        guests: [0],
        model: "plain",
        properties: {},
        memorySize: null,
      },
    ]);
  });

  it("get and set change the device and log the change", async () => {
    assert.equal(await ask("get 0x48 temperature"), "ok 25");
    assert.equal(await ask("set 72 temperature 31.5"), "ok 31.5");
    assert.equal(sensor.temperature, 31.5);
    assert.equal(await ask("get 0x48 temperature"), "ok 31.5");
    assert.ok(log.lines.some((l) => l.includes("control set 0x48 temperature=31.5")));
  });

  it("answers model refusals and lookup failures with error codes", async () => {
    assert.match(await ask("set 0x48 temperature 400"), /^error EINVAL .*outside -55\.\.125/);
    assert.equal(sensor.temperature, 25);
    assert.match(await ask("set 0x48 id x"), /^error EREADONLY /);
    assert.match(await ask("get 0x48 nope"), /^error ENOPROP .*known: temperature, id, broken/);
    assert.match(await ask("get 0x48 constructor"), /^error ENOPROP /);
    assert.match(await ask("get 0x49 temperature"), /^error ENODEV no emulated device at 0x49/);
    assert.match(await ask("read 0x50 0 1"), /^error ENOMEM /);
    assert.match(await ask("get 0x48 broken"), /^error EMODEL .*model bug/);
    assert.match(await ask("bogus"), /^error EUSAGE /);
  });

  it("read and write memory as hex, within bounds", async () => {
    assert.equal(await ask("write 0x48 0xfe 0102"), "ok 2");
    assert.deepEqual([...sensor.bytes.subarray(0xfd, 0x100)], [0, 1, 2]);
    assert.equal(await ask("read 0x48 253 3"), "ok 000102");
    assert.match(await ask("write 0x48 255 0102"), /^error ERANGE /);
    assert.match(await ask("read 0x48 0 257"), /^error ERANGE /);
    assert.ok(log.lines.some((l) => l.includes("control write 0x48 offset=254 length=2")));
  });

  it("answers JSON lines with JSON", async () => {
    const reply = await ask('{"cmd":"set","addr":72,"property":"temperature","value":"-5"}');
    assert.deepEqual(JSON.parse(reply), { ok: true, result: -5 });
    const error = JSON.parse(await ask('{"cmd":"get","addr":1,"property":"x"}'));
    assert.equal(error.code, "ENODEV");
  });

  it("answers several commands on one connection in order, blank lines ignored", async () => {
    const client = await ControlClient.connect(path);
    client.writeRaw("\n\r\n");
    assert.equal(await client.request("set 0x48 temperature 1"), "ok 1");
    assert.equal(await client.request("get 0x48 temperature"), "ok 1");
    client.close();
  });

  it("disconnects a client whose line exceeds the limit and keeps serving others", async () => {
    const client = await ControlClient.connect(path);
    const closed = client.whenClosed();
    const reply = client.request("x".repeat(MAX_LINE_BYTES + 1));
    assert.match(await reply, /^error ETOOLONG /);
    await closed;
    assert.equal(await ask("get 0x48 temperature"), "ok 25");
  });

  it("survives garbage bytes and a client leaving mid-line", async () => {
    const garbage = await ControlClient.connect(path);
    assert.match(await garbage.request("\u0000\u00ff\ufffd{{{"), /^error EUSAGE /);
    const leaver = await ControlClient.connect(path);
    leaver.writeRaw("set 0x48 temperature 99");
    leaver.close();
    await leaver.whenClosed();
    assert.match(await garbage.request("get 0x48 temperature"), /^ok 25$/);
    garbage.close();
  });

  it("serves two clients at once, each seeing the other's changes", async () => {
    const a = await ControlClient.connect(path);
    const b = await ControlClient.connect(path);
    assert.equal(server.clientCount, 2);
    const [ra, rb] = await Promise.all([
      a.request("set 0x48 temperature 10"),
      b.request("write 0x48 0 aa"),
    ]);
    assert.equal(ra, "ok 10");
    assert.equal(rb, "ok 1");
    assert.equal(await b.request("get 0x48 temperature"), "ok 10");
    assert.equal(await a.request("read 0x48 0 1"), "ok aa");
    a.close();
    b.close();
  });

  it("stops parsing a client's commands while it does not read the replies, and carries on after", async () => {
    const line = "read 0x48 0 256\n";
    const count = Math.floor(65536 / line.length) * 2;
    let reads = 0;
    const memoryRead = sensor.memory?.read;
    assert.ok(sensor.memory && memoryRead);
    sensor.memory.read = (offset, length) => {
      reads++;
      return memoryRead(offset, length);
    };
    const socket = connect(path);
    socket.pause();
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.write(line.repeat(count));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const whilePaused = reads;
    assert.ok(whilePaused < count / 2, `${whilePaused} of ${count} answered while unread`);
    let replies = 0;
    socket.on("data", (chunk: Buffer) => {
      for (const byte of chunk) if (byte === 0x0a) replies++;
    });
    socket.resume();
    await waitFor(() => replies === count);
    assert.equal(reads, count);
    socket.destroy();
  });

  it("answers every line of a client that half-closes, then ends the connection", async () => {
    const socket = connect(path);
    let text = "";
    socket.setEncoding("utf8").on("data", (chunk: string) => {
      text += chunk;
    });
    const ended = new Promise((resolve) => socket.once("end", resolve));
    socket.end("read 0x48 0 256\n".repeat(2000));
    await ended;
    const lines = text.split("\n").filter((l) => l !== "");
    assert.equal(lines.length, 2000);
    assert.ok(lines.every((l) => l === `ok ${"00".repeat(256)}`));
  });

  it("close disconnects connected clients", async () => {
    const client = await ControlClient.connect(path);
    const closed = client.whenClosed();
    server.close();
    await closed;
    await assert.rejects(client.request("list"), { code: "ECLOSED" });
  });

  it("replaces a stale socket file, refuses a live one and a non-socket", () => {
    server.close();
    // A socket file nobody accepts on, as a killed daemon leaves it.
    const stale = join(dir, "stale.sock");
    UnixListener.listen(stale).close();
    assert.ok(statSync(stale).isSocket());
    const replaced = ControlServer.listen(stale, chips);
    assert.equal(statSync(stale).mode & 0o777, 0o600);
    assert.throws(
      () => ControlServer.listen(stale, chips),
      (error: unknown) => {
        assert.ok(error instanceof SocketFileError);
        assert.equal(error.code, "EADDRINUSE");
        return true;
      },
    );
    replaced.close();

    const file = join(dir, "plain-file");
    writeFileSync(file, "keep me");
    assert.throws(() => ControlServer.listen(file, chips), { code: "EEXIST" });
    assert.throws(() => ControlServer.listen(join(dir, "missing", "c.sock"), chips), {
      code: "ENOENT",
    });
  });
});

describe("runControlCommand", () => {
  let dir: string;
  let path: string;
  let server: ControlServer;
  let sensor: ReturnType<typeof fakeDevice>;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "control-cli-"));
    path = join(dir, "control.sock");
    sensor = fakeDevice();
    const directory = [
      {
        address: 0x48,
        faults: new ChipFaults(0x48),
        model: "fake",
        device: sensor,
        key: "k3",
        sockets: [0],
      },
    ];
    server = ControlServer.listen(
      path,
      inProcessChips(() => directory),
    );
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function sinks() {
    const out: string[] = [];
    const err: string[] = [];
    return {
      out,
      err,
      outSink: { write: (s: string) => out.push(s) },
      errSink: { write: (s: string) => err.push(s) },
    };
  }

  it("prints the payload and returns 0 on ok", async () => {
    const s = sinks();
    const status = await runControlCommand(
      path,
      ["set", "0x48", "temperature", "31.5"],
      s.outSink,
      s.errSink,
    );
    assert.equal(status, 0);
    assert.deepEqual(s.out, ["31.5\n"]);
    assert.equal(sensor.temperature, 31.5);
  });

  it("returns 1 and prints the error on an error reply", async () => {
    const s = sinks();
    const status = await runControlCommand(path, ["get", "0x49", "x"], s.outSink, s.errSink);
    assert.equal(status, 1);
    assert.match(s.err.join(""), /^error ENODEV /);
    assert.deepEqual(s.out, []);
  });

  it("returns 2 for usage errors without connecting, and when nobody listens", async () => {
    const s = sinks();
    assert.equal(await runControlCommand(path, ["get", "0x48"], s.outSink, s.errSink), 2);
    assert.equal(await runControlCommand(path, [], s.outSink, s.errSink), 2);
    assert.equal(
      await runControlCommand(
        path,
        ["set", "0x48", "temperature", "1\nlist"],
        s.outSink,
        s.errSink,
      ),
      2,
    );
    assert.equal(sensor.temperature, 31.5);
    assert.equal(
      await runControlCommand(join(dir, "nobody.sock"), ["list"], s.outSink, s.errSink),
      2,
    );
    assert.match(s.err.join(""), /cannot connect to .*nobody\.sock/);
  });
});

describe("devices of several guests (per-guest lists)", () => {
  // Guests 0 and 2 share one sensor at 0x48 (the default list); guest 1 has its own at 0x48; only
  // guest 1 has memory at 0x50.
  const shared = fakeDevice();
  const own = fakeDevice();
  const memory = fakeDevice();
  const directory: DeviceDirectory = [
    {
      address: 0x48,
      faults: new ChipFaults(0x48),
      model: "fake-sensor",
      device: shared,
      key: "k4",
      sockets: [0, 2],
    },
    {
      address: 0x48,
      faults: new ChipFaults(0x48),
      model: "other-sensor",
      device: own,
      key: "k5",
      sockets: [1],
    },
    {
      address: 0x50,
      faults: new ChipFaults(0x50),
      model: "fake-memory",
      device: memory,
      key: "k6",
      sockets: [1],
    },
  ];
  const chips = inProcessChips(() => directory);
  const answer = async (line: string) => (await handleLine(chips, line, silentLogger)) ?? "";

  it("a qualified address reaches the device that guest sees", async () => {
    assert.equal(await answer("set 1:0x48 temperature 30"), "ok 30\n");
    assert.equal(await answer("set 2:0x48 temperature 40"), "ok 40\n");
    assert.deepEqual([shared.temperature, own.temperature], [40, 30]);
    assert.equal(await answer("get 0:0x48 temperature"), "ok 40\n", "guests 0 and 2 share one");
    assert.equal(
      await answer('{"cmd":"get","guest":1,"addr":72,"property":"temperature"}'),
      '{"ok":true,"result":30}\n',
    );
    assert.equal(await answer("write 1:0x50 0 abcd"), "ok 2\n");
    assert.equal(await answer("read 1:0x50 0 2"), "ok abcd\n");
  });

  it("a bare address works when one device has it", async () => {
    assert.equal(await answer("read 0x50 0 2"), "ok abcd\n");
  });

  it("a bare address two devices have is refused, listing their qualified names", async () => {
    for (const line of ["get 0x48 temperature", "set 72 temperature 0", "read 0x48 0 1"]) {
      const reply = await answer(line);
      assert.match(reply, /^error EAMBIGUOUS 0x48 names 2 emulated devices/, line);
      assert.match(reply, /0:0x48 \(fake-sensor, guests 0,2\), 1:0x48 \(other-sensor, guest 1\)/);
    }
    assert.equal(own.temperature, 30, "a refused command changes nothing");
    const json = JSON.parse(await answer('{"cmd":"get","addr":72,"property":"temperature"}'));
    assert.equal(json.code, "EAMBIGUOUS");
  });

  it("a guest without a device at that address gets ENODEV naming the guest", async () => {
    assert.equal(
      await answer("get 0:0x50 id"),
      "error ENODEV guest 0 has no emulated device at 0x50\n",
    );
    assert.match(await answer("get 5:0x48 id"), /^error ENODEV guest 5 /);
    assert.match(await answer("get 0x49 id"), /^error ENODEV no emulated device at 0x49/);
  });

  it("list names every device, qualified where the address is shared, with its guests", async () => {
    shared.failing = false;
    own.failing = false;
    memory.failing = false;
    const reply = await answer("list");
    const list = JSON.parse(reply.slice(3)) as {
      name: string;
      address: string;
      guests: number[];
      model: string;
    }[];
    assert.deepEqual(
      list.map(({ name, address, guests, model }) => ({ name, address, guests, model })),
      [
        { name: "0:0x48", address: "0x48", guests: [0, 2], model: "fake-sensor" },
        { name: "1:0x48", address: "0x48", guests: [1], model: "other-sensor" },
        { name: "0x50", address: "0x50", guests: [1], model: "fake-memory" },
      ],
    );
    for (const { name } of list) {
      assert.match(await answer(`get ${name} id`), /^ok fake/, `${name} from list is usable`);
    }
  });
});

describe("ControlServer follows its directory source", () => {
  it("asks the source at every command: a replaced configuration is served at once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "control-source-"));
    const first = fakeDevice();
    const second = fakeDevice();
    second.temperature = 50;
    let current: DeviceDirectory = [
      {
        address: 0x48,
        faults: new ChipFaults(0x48),
        model: "old",
        device: first,
        key: "k7",
        sockets: [0],
      },
    ];
    const server = ControlServer.listen(
      join(dir, "c.sock"),
      inProcessChips(() => current),
    );
    const client = await ControlClient.connect(join(dir, "c.sock"));
    try {
      assert.equal(await client.request("get 0x48 temperature"), "ok 25");
      current = [
        {
          address: 0x49,
          faults: new ChipFaults(0x49),
          model: "new",
          device: second,
          key: "k8",
          sockets: [0],
        },
      ];
      // The same connection, no reconnect: the next command sees the new devices.
      assert.match(await client.request("get 0x48 temperature"), /^error ENODEV /);
      assert.equal(await client.request("get 0x49 temperature"), "ok 50");
    } finally {
      client.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("ControlServer limits", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "control-limits-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const chips = inProcessChips((): DeviceDirectory => []);

  it("when full, an operator's connection takes the place of the longest-idle client of another uid; others are refused", async () => {
    const path = join(dir, "full.sock");
    const uids = [1234, 1234, 0, 1234];
    const { lines, logger } = collectingLogger();
    const server = ControlServer.listen(path, chips, {
      logger,
      maxClients: 2,
      peerUid: () => uids.shift() ?? null,
    });
    try {
      const first = await ControlClient.connect(path);
      assert.match(await first.request("help"), /^ok /);
      const second = await ControlClient.connect(path);
      assert.match(await second.request("help"), /^ok /);
      const operator = await ControlClient.connect(path);
      assert.match(await operator.request("list"), /^ok \[\]$/);
      await first.whenClosed();
      assert.match(await second.request("help"), /^ok /, "the more recently active client stays");
      const refused = await ControlClient.connect(path);
      await refused.whenClosed();
      assert.equal(server.clientCount, 2);
      assert.ok(lines.some((l) => /dropping the longest-idle client .*uid=0 dropped=1234/.test(l)));
      assert.ok(lines.some((l) => /too many clients, one refused uid=1234/.test(l)));
      for (const client of [second, operator, refused]) client.close();
    } finally {
      server.close();
    }
  });

  it("disconnects a client that completes no command within the idle timeout", async () => {
    const path = join(dir, "idle.sock");
    const server = ControlServer.listen(path, chips, { idleTimeoutMs: 100 });
    try {
      const client = await ControlClient.connect(path);
      client.writeRaw("hel");
      const start = Date.now();
      await client.whenClosed();
      assert.ok(Date.now() - start >= 50);
      await waitFor(() => server.clientCount === 0);
    } finally {
      server.close();
    }
  });
});

describe("ControlServer over chips that answer asynchronously", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "control-async-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** The in-process chips, with each property get and set delayed by `delayMs()`. */
  function delayedChips(directory: DeviceDirectory, delayMs: (name: string) => Promise<void>) {
    const chips = inProcessChips(() => directory);
    return {
      ...chips,
      getProperty: async (chip: string, name: string) => {
        await delayMs(name);
        return chips.getProperty(chip, name);
      },
      setProperty: async (chip: string, name: string, value: string) => {
        await delayMs(name);
        return chips.setProperty(chip, name, value);
      },
    };
  }

  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

  it("answers pipelined commands in order, each after the one before it took effect", async () => {
    const sensor = fakeDevice();
    const directory = [
      {
        address: 0x48,
        faults: new ChipFaults(0x48),
        model: "fake",
        device: sensor,
        key: "k9",
        sockets: [0],
      },
    ];
    // Each answer comes sooner than the one before: answered side by side, they would cross.
    let pending = 40;
    const chips = delayedChips(directory, () => sleep(2 * pending--));
    const path = join(dir, "pipelined.sock");
    const server = ControlServer.listen(path, chips);
    const socket = connect(path);
    try {
      let text = "";
      socket.setEncoding("utf8").on("data", (chunk: string) => {
        text += chunk;
      });
      const lines: string[] = [];
      const expected: string[] = [];
      for (let i = 0; i < 20; i++) {
        lines.push(`set 0x48 temperature ${i}`, "get 0x48 temperature");
        expected.push(`ok ${i}`, `ok ${i}`);
      }
      socket.write(`${lines.join("\n")}\n`);
      await waitFor(() => text.split("\n").length > expected.length);
      assert.deepEqual(text.split("\n").slice(0, -1), expected);
    } finally {
      socket.destroy();
      server.close();
    }
  });

  it("a slow answer on one connection does not hold up another", async () => {
    const sensor = fakeDevice();
    const directory = [
      {
        address: 0x48,
        faults: new ChipFaults(0x48),
        model: "fake",
        device: sensor,
        key: "k10",
        sockets: [0],
      },
    ];
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const chips = delayedChips(directory, (name) =>
      name === "temperature" ? held : Promise.resolve(),
    );
    const path = join(dir, "slow.sock");
    const server = ControlServer.listen(path, chips);
    const slow = await ControlClient.connect(path);
    const other = await ControlClient.connect(path);
    try {
      let slowReply: string | undefined;
      const answered = slow.request("get 0x48 temperature").then((reply) => {
        slowReply = reply;
      });
      assert.equal(await other.request("get 0x48 id"), "ok fake");
      assert.equal(await other.request("write 0x48 0 aa"), "ok 1");
      assert.equal(slowReply, undefined, "the slow command is still waiting");
      release();
      await answered;
      assert.equal(slowReply, "ok 25");
    } finally {
      slow.close();
      other.close();
      server.close();
    }
  });

  it("answers ETIMEDOUT when the chips never answer, then serves the next command", async () => {
    const sensor = fakeDevice();
    const directory = [
      {
        address: 0x48,
        faults: new ChipFaults(0x48),
        model: "fake",
        device: sensor,
        key: "k11",
        sockets: [0],
      },
    ];
    const never = new Promise<void>(() => {});
    const chips = delayedChips(directory, (name) =>
      name === "temperature" ? never : Promise.resolve(),
    );
    const path = join(dir, "timeout.sock");
    const server = ControlServer.listen(path, chips, { replyTimeoutMs: 100 });
    const client = await ControlClient.connect(path);
    try {
      const start = Date.now();
      assert.match(
        await client.request("set 0x48 temperature 30"),
        /^error ETIMEDOUT no answer from the devices within 100 ms/,
      );
      const waited = Date.now() - start;
      assert.ok(waited >= 90 && waited < 2000, `answered after ${waited} ms`);
      const json = JSON.parse(
        await client.request('{"cmd":"get","addr":72,"property":"temperature"}'),
      );
      assert.equal(json.code, "ETIMEDOUT");
      assert.equal(await client.request("get 0x48 id"), "ok fake");
    } finally {
      client.close();
      server.close();
    }
  });

  it("answers a stats source that never settles ETIMEDOUT, and one that resolves with its value", async () => {
    const path = join(dir, "stats.sock");
    let answer: Promise<unknown> = new Promise(() => {});
    const server = ControlServer.listen(
      path,
      inProcessChips(() => []),
      { replyTimeoutMs: 100, stats: () => answer },
    );
    const client = await ControlClient.connect(path);
    try {
      assert.match(await client.request("stats"), /^error ETIMEDOUT /);
      answer = Promise.resolve({ transfers: 7 });
      assert.equal(await client.request("stats"), 'ok {"transfers":7}');
    } finally {
      client.close();
      server.close();
    }
  });

  it("a transport that fails is answered as an internal error and logged", async () => {
    const path = join(dir, "broken.sock");
    const directory = [
      {
        address: 0x48,
        faults: new ChipFaults(0x48),
        model: "fake",
        device: fakeDevice(),
        key: "k12",
        sockets: [0],
      },
    ];
    const { lines, logger } = collectingLogger();
    const chips = chipAccess({
      directory: () => describeChips(directory),
      request: () => Promise.reject(new Error("the data-plane thread exited")),
    });
    const server = ControlServer.listen(path, chips, { logger });
    const client = await ControlClient.connect(path);
    try {
      assert.equal(await client.request("get 0x48 id"), "error EMODEL internal error");
      assert.equal(await client.request("help").then((r) => r.slice(0, 12)), "ok commands:");
      assert.ok(lines.some((l) => /control command failed .*data-plane thread exited/.test(l)));
    } finally {
      client.close();
      server.close();
    }
  });
});
