import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EventFd } from "../sys/eventfd.js";
import { UnixStream } from "../sys/unix-socket.js";
import { encodeHeader, encodeMessage, requestFlags } from "./codec.js";
import {
  type ChannelOptions,
  type CloseReason,
  type Message,
  MessageChannel,
} from "./connection.js";
import { HEADER_SIZE, MAX_PAYLOAD_SIZE, Request } from "./protocol.js";

function channelPair(
  options: ChannelOptions = {},
  onMessage: (channel: MessageChannel, message: Message) => void = () => {},
) {
  const [near, far] = UnixStream.pair();
  const messages: Message[] = [];
  const waiters: (() => void)[] = [];
  let closed: CloseReason | null = null;
  const channel: MessageChannel = new MessageChannel(
    far,
    {
      onMessage: (m) => {
        messages.push(m);
        onMessage(channel, m);
        for (const w of waiters.splice(0)) w();
      },
      onClose: (r) => {
        closed = r;
        for (const w of waiters.splice(0)) w();
      },
    },
    undefined,
    options,
  );
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

  describe("a peer that sends requests and never reads the replies", () => {
    const request = encodeMessage(Request.GET_FEATURES, requestFlags(false), new Uint8Array(0));
    /** Replies to every request with 8 bytes, like GET_FEATURES. */
    const echo = (channel: MessageChannel, m: Message) =>
      channel.send(m.header.request, 0x5, new Uint8Array(8));
    const idle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    /** Writes requests whenever the socket takes them, for `ms`; returns how many it took. */
    const flood = async (near: UnixStream, ms: number): Promise<number> => {
      let sent = 0;
      const end = Date.now() + ms;
      while (Date.now() < end) {
        try {
          near.send(request);
          sent++;
        } catch (error) {
          assert.equal((error as { code?: string }).code, "EAGAIN");
          await idle(1);
        }
      }
      return sent;
    };

    it("stops reading once a reply cannot be sent, and disconnects when the deadline passes", async () => {
      const pair = channelPair({ sendDeadlineMs: 300 }, echo);
      try {
        const sent = await flood(pair.near, 150);
        const handled = pair.messages.length;
        assert.ok(handled < sent, `${handled} of ${sent} requests handled: reading stopped`);
        await idle(100);
        assert.equal(pair.messages.length, handled, "nothing more is read while a reply waits");
        assert.equal(pair.closed(), null);
        await pair.until(() => pair.closed() !== null);
        const reason = pair.closed();
        assert.equal(reason?.kind, "protocol");
        assert.equal(reason?.kind === "protocol" && reason.error.name, "ChannelError");
        assert.equal(
          reason?.kind === "protocol" && (reason.error as { code?: string }).code,
          "EUNSENT_DEADLINE",
        );
      } finally {
        pair.near.close();
      }
    });

    it("reads again, in order, once the peer drains its replies", async () => {
      const pair = channelPair({ sendDeadlineMs: 10_000 }, echo);
      try {
        const sent = await flood(pair.near, 100);
        assert.ok(pair.messages.length < sent);
        const into = new Uint8Array(1 << 16);
        let replies = 0;
        while (replies < sent) {
          const n = pair.near.recv(into, 0, into.length, []);
          if (n > 0) replies += n / (HEADER_SIZE + 8);
          else await idle(1);
        }
        assert.equal(replies, sent, "every request got its reply");
        assert.equal(pair.messages.length, sent);
        assert.equal(pair.closed(), null, "a peer that reads is kept");
      } finally {
        pair.channel.close();
        pair.near.close();
      }
    });

    it("disconnects a peer whose unsent messages pass the byte limit", async () => {
      // A thousand replies to one request: far more than the socket buffer holds.
      const pair = channelPair({ maxUnsentBytes: 2 * (HEADER_SIZE + 8) }, (channel, m) => {
        for (let i = 0; i < 1000; i++) echo(channel, m);
      });
      try {
        pair.near.send(request);
        await pair.until(() => pair.closed() !== null);
        const reason = pair.closed();
        assert.equal(
          reason?.kind === "protocol" && (reason.error as { code?: string }).code,
          "EUNSENT_LIMIT",
        );
      } finally {
        pair.near.close();
      }
    });
  });
});
