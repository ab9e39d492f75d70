import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { scaled } from "../../test/helpers/time.js";
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
  onMessage: (channel: MessageChannel, message: Message) => void | Promise<void> = () => {},
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
        const result = onMessage(channel, m);
        for (const w of waiters.splice(0)) w();
        return result;
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
    /**
     * Writes requests whenever the socket takes them, until it has refused them on `QUIET_TURNS`
     * event-loop turns in a row, each a turn for the channel to read (it stopped reading); returns
     * how many it took. Not for a fixed time: natively 278 sends fill the socket in 9 ms, under
     * qemu-user in 200 ms, so a 150 ms flood never met EAGAIN (and never let the channel read), and
     * a turn can take longer than any quiet time on a loaded host.
     */
    const QUIET_TURNS = 20;
    const flood = async (near: UnixStream): Promise<number> => {
      let sent = 0;
      let refusedTurns = 0;
      const end = Date.now() + scaled(10_000);
      for (;;) {
        try {
          near.send(request);
          sent++;
          refusedTurns = 0;
        } catch (error) {
          assert.equal((error as { code?: string }).code, "EAGAIN");
          if (++refusedTurns >= QUIET_TURNS) return sent;
          assert.ok(Date.now() < end, `the channel still reads after ${sent} requests`);
          await idle(1);
        }
      }
    };

    it("stops reading once a reply cannot be sent, and disconnects when the deadline passes", async () => {
      const pair = channelPair({ sendDeadlineMs: scaled(300) }, echo);
      try {
        const sent = await flood(pair.near);
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
      const pair = channelPair({ sendDeadlineMs: scaled(10_000) }, echo);
      try {
        const sent = await flood(pair.near);
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

describe("MessageChannel.release", () => {
  const message = (request: number, payload = new Uint8Array(8)) =>
    encodeMessage(request, requestFlags(false), payload);
  /** Lets the event loop turn a few times (readiness callbacks, settled promises). */
  const turns = async (count = 5) => {
    for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve));
  };
  /** A channel over `fd` (what the next owner makes of the released socket) and what it reads. */
  const nextOwner = (fd: number) => {
    const messages: { request: number; fds: number }[] = [];
    const waiters: (() => void)[] = [];
    const channel = new MessageChannel(UnixStream.adopt(fd), {
      onMessage: (m) => {
        messages.push({ request: m.header.request, fds: m.fds.count });
        for (const w of waiters.splice(0)) w();
      },
      onClose: () => undefined,
    });
    const until = async (count: number) => {
      while (messages.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
    };
    return { channel, messages, until };
  };
  /** Tracks a promise's outcome without awaiting it. */
  const watch = <T>(promise: Promise<T>) => {
    const outcome: { value?: T; error?: unknown; settled: boolean } = { settled: false };
    promise.then(
      (value) => Object.assign(outcome, { value, settled: true }),
      (error: unknown) => Object.assign(outcome, { error, settled: true }),
    );
    return outcome;
  };

  it("gives the socket up, open, between two messages; what comes next waits for the next owner", async () => {
    const { near, channel, messages, until, closed } = channelPair();
    const kick = EventFd.create();
    try {
      near.send(message(Request.GET_FEATURES));
      await until(() => messages.length === 1);
      const fd = await channel.release();
      assert.ok(fd >= 0);
      assert.equal(channel.isClosed, true);
      // After the release: a message with an fd, and the peer hanging up. The old channel sees none.
      near.send(message(Request.SET_VRING_KICK), [kick.fd]);
      near.send(message(Request.GET_STATUS));
      await turns();
      assert.equal(messages.length, 1);
      assert.equal(closed(), null, "no onClose for a release");
      const next = nextOwner(fd);
      try {
        await next.until(2);
        assert.deepEqual(next.messages, [
          { request: Request.SET_VRING_KICK, fds: 1 },
          { request: Request.GET_STATUS, fds: 0 },
        ]);
      } finally {
        next.channel.close();
      }
      assert.equal(closed(), null);
      // Sends after a release are dropped, a second release refused.
      channel.send(Request.GET_FEATURES, 0, new Uint8Array(8));
      await assert.rejects(channel.release(), /the channel is closed/);
    } finally {
      kick.close();
      near.close();
    }
  });

  it("waits for an async handler, reading nothing meanwhile", async () => {
    let finish = () => {};
    const handling = () =>
      new Promise<void>((resolve) => {
        finish = resolve;
      });
    const { near, channel, messages, until, closed } = channelPair({}, handling);
    try {
      near.send(message(Request.SET_MEM_TABLE));
      await until(() => messages.length === 1);
      const released = watch(channel.release());
      await assert.rejects(channel.release(), /already being released/);
      near.send(message(Request.GET_VRING_BASE));
      await turns();
      assert.equal(released.settled, false, "the handler still runs");
      assert.equal(messages.length, 1);
      finish();
      await turns();
      assert.equal(released.settled, true);
      assert.equal(typeof released.value, "number");
      assert.equal(closed(), null);
      const next = nextOwner(released.value as number);
      try {
        await next.until(1);
        assert.deepEqual(next.messages, [{ request: Request.GET_VRING_BASE, fds: 0 }]);
      } finally {
        next.channel.close();
      }
    } finally {
      near.close();
    }
  });

  it("waits for the rest of a message that has begun, and hands it to the handler first", async () => {
    const { near, channel, messages, until, closed } = channelPair();
    const kick = EventFd.create();
    try {
      const first = message(Request.SET_VRING_CALL);
      near.send(first.subarray(0, HEADER_SIZE + 2), [kick.fd]);
      await turns();
      const released = watch(channel.release());
      await turns();
      assert.equal(released.settled, false, "in the middle of a message");
      near.send(first.subarray(HEADER_SIZE + 2));
      await until(() => messages.length === 1);
      await turns();
      assert.equal(released.settled, true);
      assert.equal(messages[0]!.fds.count, 1, "the fd went with its message");
      assert.equal(closed(), null);
      const next = nextOwner(released.value as number);
      next.channel.close();
    } finally {
      kick.close();
      near.close();
    }
  });

  it("waits until the messages queued for the peer are sent", async () => {
    const [near, far] = UnixStream.pair();
    // Fill the socket towards the peer, so the channel's next message has to wait for room.
    const filler = new Uint8Array(4096);
    let filled = 0;
    for (;;) {
      try {
        far.send(filler);
        filled += filler.length;
      } catch (error) {
        assert.equal((error as { code?: string }).code, "EAGAIN");
        break;
      }
    }
    let closed: CloseReason | null = null;
    const channel = new MessageChannel(far, {
      onMessage: () => undefined,
      onClose: (reason) => {
        closed = reason;
      },
    });
    try {
      channel.send(Request.GET_FEATURES, 0x5, new Uint8Array(8));
      const released = watch(channel.release());
      await turns();
      assert.equal(released.settled, false, "a reply waits for room");
      // The peer reads everything: the filler, then the reply, which must come before the release.
      const into = new Uint8Array(1 << 16);
      let read = 0;
      const expected = filled + HEADER_SIZE + 8;
      while (read < expected) {
        const n = near.recv(into, 0, into.length, []);
        if (n > 0) read += n;
        else await turns(1);
      }
      assert.equal(read, expected);
      await turns();
      assert.equal(released.settled, true);
      assert.equal(closed, null);
      const next = nextOwner(released.value as number);
      next.channel.close();
    } finally {
      near.close();
    }
  });

  it("rejects when the channel closes first, which then tells onClose", async () => {
    const eof = channelPair();
    // Half a header: the channel waits for the rest, and gets the end of the stream.
    eof.near.send(message(Request.GET_FEATURES).subarray(0, 4));
    await turns();
    const released = eof.channel.release();
    eof.near.close();
    await assert.rejects(released, /closed before it could be released/);
    assert.equal(eof.closed()?.kind, "eof");

    const local = channelPair();
    local.near.send(message(Request.GET_FEATURES).subarray(0, 4));
    await turns();
    const pending = local.channel.release();
    local.channel.close("shutting down");
    await assert.rejects(pending, /closed before it could be released/);
    assert.equal(local.closed()?.kind, "local");
    local.near.close();
  });
});
