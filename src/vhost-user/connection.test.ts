import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EventFd } from "../sys/eventfd.js";
import { UnixStream } from "../sys/unix-socket.js";
import { encodeHeader, encodeMessage, requestFlags } from "./codec.js";
import { type CloseReason, type Message, MessageChannel } from "./connection.js";
import { MAX_PAYLOAD_SIZE } from "./protocol.js";

function channelPair() {
  const [near, far] = UnixStream.pair();
  const messages: Message[] = [];
  const waiters: (() => void)[] = [];
  let closed: CloseReason | null = null;
  const channel = new MessageChannel(far, {
    onMessage: (m) => {
      messages.push(m);
      for (const w of waiters.splice(0)) w();
    },
    onClose: (r) => {
      closed = r;
      for (const w of waiters.splice(0)) w();
    },
  });
  const until = async (done: () => boolean) => {
    while (!done()) await new Promise<void>((resolve) => waiters.push(resolve));
  };
  return { near, channel, messages, until, closed: () => closed };
}

describe("MessageChannel", () => {
  it("reassembles a message sent in pieces and splits back-to-back messages with their fds", async () => {
    const { near, channel, messages, until } = channelPair();
    const e1 = EventFd.create();
    const e2 = EventFd.create();
    try {
      const first = encodeMessage(12, requestFlags(false), new Uint8Array(8));
      near.send(first.subarray(0, 5), [e1.fd]);
      near.send(first.subarray(5, 15));
      near.send(first.subarray(15));
      const second = encodeMessage(13, requestFlags(false), new Uint8Array(8));
      const third = encodeMessage(1, requestFlags(false), new Uint8Array(0));
      const both = new Uint8Array(second.byteLength + third.byteLength);
      both.set(second);
      both.set(third, second.byteLength);
      near.send(both, [e2.fd]);
      await until(() => messages.length === 3);
      assert.deepEqual(
        messages.map((m) => [m.header.request, m.fds.count]),
        [
          [12, 1],
          [13, 1],
          [1, 0],
        ],
      );
    } finally {
      e1.close();
      e2.close();
      channel.close();
      near.close();
    }
  });

  it("closes on a payload larger than the limit and on EOF", async () => {
    const big = channelPair();
    big.near.send(encodeHeader({ request: 1, flags: 1, size: MAX_PAYLOAD_SIZE + 1 }));
    await big.until(() => big.closed() !== null);
    assert.equal(big.closed()?.kind, "protocol");
    big.near.close();

    const eof = channelPair();
    eof.near.send(encodeHeader({ request: 1, flags: 1, size: 8 }));
    eof.near.close();
    await eof.until(() => eof.closed() !== null);
    assert.equal(eof.closed()?.kind, "eof");
    assert.equal(eof.messages.length, 0);
  });
});
