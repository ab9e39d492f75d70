import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TransferOrder } from "./transfer-order.js";

interface Job {
  readonly name: string;
  readonly generation: number;
  /** Goes asynchronous when run. */
  readonly async: boolean;
  /** Set by keep: the copy that waited. */
  readonly kept?: boolean;
}

/** A TransferOrder whose runs are recorded by name. */
function recordingOrder() {
  const ran: string[] = [];
  const order = new TransferOrder<Job>((job) => {
    ran.push(job.kept ? `${job.name} (kept)` : job.name);
    return job.async;
  });
  const keep = (job: Job): Job => ({ ...job, kept: true });
  const submit = (name: string, async = false) =>
    order.submit({ name, generation: order.generation, async }, keep);
  return { order, ran, submit };
}

const settled = (promise: Promise<void>) => {
  let done = false;
  void promise.then(() => {
    done = true;
  });
  return () => done;
};
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("TransferOrder", () => {
  it("runs transfers at once while nothing runs asynchronously, without keeping them", () => {
    const { order, ran, submit } = recordingOrder();
    submit("a");
    submit("b");
    assert.deepEqual(ran, ["a", "b"]);
    assert.equal(order.idle, true);
  });

  it("makes later transfers wait behind an asynchronous one, kept, and runs them in order once it settles", () => {
    const { order, ran, submit } = recordingOrder();
    submit("slow", true);
    submit("b");
    submit("c");
    assert.deepEqual(ran, ["slow"]);
    assert.equal(order.idle, false);
    assert.equal(order.settle(order.generation), true);
    order.resume();
    assert.deepEqual(ran, ["slow", "b (kept)", "c (kept)"]);
    assert.equal(order.idle, true);
  });

  it("stops resuming at the next asynchronous transfer; what follows waits for that one", () => {
    const { order, ran, submit } = recordingOrder();
    submit("first", true);
    submit("second", true);
    submit("third");
    order.settle(order.generation);
    order.resume();
    assert.deepEqual(ran, ["first", "second (kept)"]);
    assert.equal(order.idle, false, "third waits behind second");
    submit("fourth");
    order.settle(order.generation);
    order.resume();
    assert.deepEqual(ran, ["first", "second (kept)", "third (kept)", "fourth (kept)"]);
  });

  it("whenIdle resolves at once when idle, else once the last waiting transfer has run", async () => {
    const { order, submit } = recordingOrder();
    await order.whenIdle();
    submit("slow", true);
    submit("after");
    const idle = settled(order.whenIdle());
    await flush();
    assert.equal(idle(), false);
    order.settle(order.generation);
    await flush();
    assert.equal(idle(), false, "settled, but not resumed: the waiting one has not run");
    order.resume();
    await flush();
    assert.equal(idle(), true);
  });

  it("a reset drops waiting transfers, wakes idle waiters and makes the running one's settle stale", async () => {
    const { order, ran, submit } = recordingOrder();
    submit("slow", true);
    const slowGeneration = order.generation;
    submit("dropped");
    const idle = settled(order.whenIdle());
    order.reset();
    await flush();
    assert.equal(idle(), true);
    assert.equal(order.idle, true, "nothing waits any more");
    assert.notEqual(order.generation, slowGeneration);
    submit("new");
    assert.equal(order.settle(slowGeneration), false, "the result of before the reset is dropped");
    order.resume();
    assert.deepEqual(ran, ["slow", "new"]);
  });
});
