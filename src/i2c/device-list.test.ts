import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { DeviceListError, type DeviceListErrorCode, parseDeviceList } from "./device-list.js";

/** Adapter names of a pretend host. */
const ADAPTERS: Readonly<Record<string, number>> = {
  "i915 gmbus dpd": 7,
  bus1: 1,
  bus2: 2,
  bus5: 5,
  "123asd": 11,
};
function resolve(name: string): number {
  const n = ADAPTERS[name];
  if (n === undefined)
    throw Object.assign(new Error("no such adapter"), { code: "ADAPTER_NOT_FOUND" });
  return n;
}
const noNames = (name: string): number => {
  throw new Error(`unexpected lookup of "${name}"`);
};

function rejects(text: string, code: DeviceListErrorCode, message?: RegExp, group?: number) {
  assert.throws(
    () => parseDeviceList(text, resolve),
    (e: unknown) => {
      assert.ok(e instanceof DeviceListError, `expected DeviceListError, got ${String(e)}`);
      assert.equal(e.code, code, e.message);
      if (message) assert.match(e.message, message);
      if (group !== undefined) assert.equal(e.group, group);
      return true;
    },
  );
}

describe("parseDeviceList accepts", () => {
  it("numbered adapters with decimal addresses (32 == 0x20)", () => {
    assert.deepEqual(parseDeviceList("1:4,2:32:21,5:5:23", noNames), [
      { bus: { kind: "host", adapter: 1 }, busText: "1", devices: [{ addr: 4 }] },
      { bus: { kind: "host", adapter: 2 }, busText: "2", devices: [{ addr: 0x20 }, { addr: 21 }] },
      { bus: { kind: "host", adapter: 5 }, busText: "5", devices: [{ addr: 5 }, { addr: 23 }] },
    ]);
  });

  it("whitespace before and after the list and around every token", () => {
    assert.deepEqual(parseDeviceList(" 1:4 ", noNames), [
      { bus: { kind: "host", adapter: 1 }, busText: "1", devices: [{ addr: 4 }] },
    ]);
    assert.deepEqual(parseDeviceList(" 1 : 4 : 0x10 ,\t2:5\n", noNames), [
      { bus: { kind: "host", adapter: 1 }, busText: "1", devices: [{ addr: 4 }, { addr: 16 }] },
      { bus: { kind: "host", adapter: 2 }, busText: "2", devices: [{ addr: 5 }] },
    ]);
  });

  it("adapter names, including names with spaces", () => {
    assert.deepEqual(parseDeviceList("bus1:4,bus2:32:21,bus5:5:23", resolve), [
      { bus: { kind: "host", adapter: 1, name: "bus1" }, busText: "bus1", devices: [{ addr: 4 }] },
      {
        bus: { kind: "host", adapter: 2, name: "bus2" },
        busText: "bus2",
        devices: [{ addr: 32 }, { addr: 21 }],
      },
      {
        bus: { kind: "host", adapter: 5, name: "bus5" },
        busText: "bus5",
        devices: [{ addr: 5 }, { addr: 23 }],
      },
    ]);
    assert.deepEqual(parseDeviceList(" i915 gmbus dpd :0x50", resolve), [
      {
        bus: { kind: "host", adapter: 7, name: "i915 gmbus dpd" },
        busText: "i915 gmbus dpd",
        devices: [{ addr: 0x50 }],
      },
    ]);
  });

  it("names and numbers mixed; a name that starts with digits is a name", () => {
    assert.deepEqual(parseDeviceList("123asd:4,12:32:21,23:5:23", resolve), [
      {
        bus: { kind: "host", adapter: 11, name: "123asd" },
        busText: "123asd",
        devices: [{ addr: 4 }],
      },
      { bus: { kind: "host", adapter: 12 }, busText: "12", devices: [{ addr: 32 }, { addr: 21 }] },
      { bus: { kind: "host", adapter: 23 }, busText: "23", devices: [{ addr: 5 }, { addr: 23 }] },
    ]);
  });

  it("the emulated bus with a model per device, mixed with host adapters", () => {
    assert.deepEqual(parseDeviceList("sim:0x50=24c02:81 = 24c02,1:0x20", noNames), [
      {
        bus: { kind: "sim" },
        busText: "sim",
        devices: [
          { addr: 0x50, model: "24c02" },
          { addr: 0x51, model: "24c02" },
        ],
      },
      { bus: { kind: "host", adapter: 1 }, busText: "1", devices: [{ addr: 0x20 }] },
    ]);
  });

  it("the whole address range 0..0x7f, in either notation", () => {
    const parsed = parseDeviceList("1:0:0x7F,2:0x01:126", resolve);
    assert.deepEqual(
      parsed.map((g) => g.devices.map((d) => d.addr)),
      [
        [0, 0x7f],
        [1, 126],
      ],
    );
  });
});

describe("parseDeviceList refuses", () => {
  it("an empty list", () => {
    rejects("", "EMPTY_LIST");
    rejects("  \t", "EMPTY_LIST");
  });
  it("an empty group", () => {
    rejects("1:4,,2:5", "EMPTY_GROUP", /group 2/, 2);
    rejects("1:4,", "EMPTY_GROUP", /group 2/, 2);
    rejects(",1:4", "EMPTY_GROUP", /group 1/, 1);
  });
  it("a group without addresses", () => {
    rejects("1", "MISSING_ADDRESS", /group 1 \("1"\)/);
    rejects("1:", "MISSING_ADDRESS");
    rejects("1:4:", "MISSING_ADDRESS");
    rejects("1::4", "MISSING_ADDRESS");
  });
  it("a group without an adapter", () => {
    rejects(":4", "MISSING_ADAPTER");
    rejects(" :4", "MISSING_ADAPTER");
  });
  it("an address that is not a number", () => {
    rejects("1:4d", "BAD_ADDRESS", /"4d"/);
    rejects("1:-1", "BAD_ADDRESS");
    rejects("1:0x", "BAD_ADDRESS");
    rejects("1:4 5", "BAD_ADDRESS");
    rejects("1:1e1", "BAD_ADDRESS");
  });
  it("an address above 0x7f", () => {
    rejects("1:128", "ADDRESS_OUT_OF_RANGE", /128/);
    rejects("1:0x80", "ADDRESS_OUT_OF_RANGE");
    rejects("1:99999999999999999999999", "ADDRESS_OUT_OF_RANGE");
  });
  it("a duplicate address inside a group and across groups (one flat guest space)", () => {
    rejects("1:4:4", "DUPLICATE_ADDRESS", /in this group/);
    rejects("1:4,2:32:21,5:4:23", "DUPLICATE_ADDRESS", /group 3 .*address 4 \(0x04\).*group 1/, 3);
    rejects("1:32,2:0x20", "DUPLICATE_ADDRESS");
    rejects("1:0x50,sim:0x50=24c02", "DUPLICATE_ADDRESS");
  });
  it("a duplicate adapter: same number, same name, or a name resolving to a listed number", () => {
    rejects("1:4,5:10:23,1:32:21", "DUPLICATE_ADAPTER", /adapter 1 .*group 1/, 3);
    rejects("bus1:4,bus5:10:23,bus5:32:21", "DUPLICATE_ADAPTER", /group 2 \("bus5"\)/);
    rejects("7:4,i915 gmbus dpd:5", "DUPLICATE_ADAPTER", /adapter 7/);
    rejects("sim:4=24c02,sim:5=24c02", "DUPLICATE_ADAPTER", /"sim"/);
  });
  it("an adapter name that cannot be resolved, keeping the cause", () => {
    assert.throws(
      () => parseDeviceList("nope:4", resolve),
      (e: unknown) =>
        e instanceof DeviceListError &&
        e.code === "ADAPTER_NOT_FOUND" &&
        /"nope": no such adapter/.test(e.message) &&
        (e.cause as { code?: string }).code === "ADAPTER_NOT_FOUND",
    );
  });
  it("an adapter number past the /dev/i2c-N range", () => {
    rejects("99999999:4", "BAD_ADAPTER_NUMBER");
  });
  it("an unknown model", () => {
    rejects("sim:0x50=24c99", "UNKNOWN_MODEL", /"24c99".*24c02/);
  });
  it("a model on a host adapter", () => {
    rejects("1:0x50=24c02", "MODEL_ON_HOST_ADAPTER");
  });
  it("an emulated device without a model", () => {
    rejects("sim:0x50", "MISSING_MODEL");
    rejects("sim:0x50=", "MISSING_MODEL");
    rejects("sim:=24c02", "MISSING_ADDRESS");
  });
});

describe("parseDeviceList properties", () => {
  it("round-trips any list of distinct adapters with distinct addresses, in any notation", () => {
    const arb = fc.uniqueArray(fc.nat(0x7f), { minLength: 1, maxLength: 40 }).chain((addrs) =>
      fc.record({
        addrs: fc.constant(addrs),
        cuts: fc.uniqueArray(fc.nat(addrs.length), { maxLength: 5 }),
        hexes: fc.array(fc.boolean(), { minLength: addrs.length, maxLength: addrs.length }),
      }),
    );
    fc.assert(
      fc.property(arb, ({ addrs, cuts, hexes }) => {
        const bounds = [0, ...cuts.filter((c) => c > 0 && c < addrs.length).sort((a, b) => a - b)];
        const groups = bounds.map((start, g) => addrs.slice(start, bounds[g + 1] ?? addrs.length));
        const text = groups
          .map((g, n) => {
            const tokens = g.map((a) => {
              const i = addrs.indexOf(a);
              return hexes[i] ? `0x${a.toString(16)}` : String(a);
            });
            return [String(n), ...tokens].join(":");
          })
          .join(",");
        const parsed = parseDeviceList(text, noNames);
        assert.deepEqual(
          parsed.map((p) => p.devices.map((d) => d.addr)),
          groups,
        );
      }),
    );
  });

  it("never throws anything but DeviceListError", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom(..."01x7f:=@, sim24c02abro".split("")) }),
        (text) => {
          try {
            parseDeviceList(text, resolve);
          } catch (e) {
            assert.ok(e instanceof DeviceListError, String(e));
          }
        },
      ),
    );
  });
});

describe("remapping (<host>@<guest>) and read-only (=ro)", () => {
  const host = (adapter: number, ...devices: object[]) => [
    { bus: { kind: "host", adapter }, busText: String(adapter), devices },
  ];

  it("host 0x52 shown at guest 0x42", () => {
    assert.deepEqual(
      parseDeviceList("0:0x52@0x42", noNames),
      host(0, { addr: 0x42, hostAddr: 0x52 }),
    );
  });

  it("suffixes combine: 0:0x52@0x42=ro is remapped and read-only", () => {
    assert.deepEqual(
      parseDeviceList("0:0x52@0x42=ro:0x50=ro:0x51", noNames),
      host(
        0,
        { addr: 0x42, hostAddr: 0x52, readOnly: true },
        { addr: 0x50, readOnly: true },
        { addr: 0x51 },
      ),
    );
  });

  it("whitespace around @ and =", () => {
    assert.deepEqual(
      parseDeviceList("0: 82 @ 66 = ro", noNames),
      host(0, { addr: 66, hostAddr: 82, readOnly: true }),
    );
  });

  it("read-only emulated devices: sim:0x50=24c02=ro", () => {
    assert.deepEqual(parseDeviceList("sim:0x50=24c02=ro:0x51=24c02", noNames), [
      {
        bus: { kind: "sim" },
        busText: "sim",
        devices: [
          { addr: 0x50, model: "24c02", readOnly: true },
          { addr: 0x51, model: "24c02" },
        ],
      },
    ]);
  });

  it("=ro16: read-only with a 16-bit register pointer, on host and emulated devices", () => {
    assert.deepEqual(
      parseDeviceList("0:0x50=ro16:0x52@0x42=ro16:0x51=ro", noNames),
      host(
        0,
        { addr: 0x50, readOnly: true, pointerBytes: 2 },
        { addr: 0x42, hostAddr: 0x52, readOnly: true, pointerBytes: 2 },
        { addr: 0x51, readOnly: true },
      ),
    );
    assert.deepEqual(parseDeviceList("sim:0x50=24c32=ro16", noNames)[0]?.devices, [
      { addr: 0x50, model: "24c32", readOnly: true, pointerBytes: 2 },
    ]);
  });

  it("refuses read-only suffixes that are neither =ro nor =ro16, naming both", () => {
    for (const text of ["0:0x50=ro8", "0:0x50=ro2", "0:0x50=RO", "sim:0x50=24c32=ro32"]) {
      rejects(text, "BAD_SUFFIX", /unknown read-only suffix .* use "=ro" .* or "=ro16"/);
    }
    rejects("0:0x50=ro16=ro", "BAD_SUFFIX", /"=ro" or "=ro16" may be given once, at the end/);
    rejects("sim:0x50=24c32=ro=ro16", "BAD_SUFFIX", /may be given once/);
    rejects("0:0x50=24c02", "MODEL_ON_HOST_ADAPTER", /"=ro" or "=ro16"/);
  });

  it("a host address may be shown at a guest address another adapter's device does not use", () => {
    const parsed = parseDeviceList("0:0x50@0x40,1:0x50", noNames);
    assert.deepEqual(
      parsed.flatMap((g) => g.devices.map((d) => d.addr)),
      [0x40, 0x50],
    );
  });

  it("duplicates are judged in guest space after remapping", () => {
    rejects("0:0x52@0x42,1:0x42", "DUPLICATE_ADDRESS", /0x42/, 2);
    rejects("0:0x42:0x52@0x42", "DUPLICATE_ADDRESS", /0x42/);
  });

  it("one host device cannot be shown at two guest addresses", () => {
    rejects("0:0x52@0x42:0x52@0x43", "DUPLICATE_HOST_ADDRESS", /host address 0x52/);
    rejects("0:0x52:0x52@0x43", "DUPLICATE_HOST_ADDRESS", /host address 0x52/);
  });

  it("refuses bad suffixes and remapping on sim", () => {
    rejects("0:0x50=ro=ro", "BAD_SUFFIX", /"=ro" or "=ro16" may be given once/);
    rejects("0:0x50=rw", "MODEL_ON_HOST_ADAPTER");
    rejects("sim:0x50@0x40=24c02", "REMAP_ON_SIM", /remaps host devices/);
    rejects("sim:0x50=ro", "MISSING_MODEL");
    rejects("sim:0x50=24c02=ro=ro", "BAD_SUFFIX");
    rejects("0:0x52@", "MISSING_ADDRESS");
    rejects("0:0x52@0x80", "ADDRESS_OUT_OF_RANGE");
    rejects("0:@0x42", "MISSING_ADDRESS");
  });

  it("property: remapped lists keep guest addresses unique and host addresses per adapter", () => {
    const arb = fc.uniqueArray(fc.integer({ min: 0, max: 0x7f }), { minLength: 1, maxLength: 20 });
    fc.assert(
      fc.property(
        arb,
        arb,
        fc.array(fc.boolean(), { minLength: 20, maxLength: 20 }),
        (hosts, guests, ro) => {
          const n = Math.min(hosts.length, guests.length);
          const tokens = hosts.slice(0, n).map((h, i) => `${h}@${guests[i]}${ro[i] ? "=ro" : ""}`);
          const [group] = parseDeviceList(`3:${tokens.join(":")}`, noNames);
          assert.deepEqual(
            group?.devices.map((d) => [d.hostAddr, d.addr, d.readOnly === true]),
            hosts.slice(0, n).map((h, i) => [h, guests[i], ro[i] === true]),
          );
        },
      ),
    );
  });
});
