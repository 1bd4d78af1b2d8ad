/** A batch in hand: it joins the next round with what it brings, or leaves without. */
export interface BatchTicket<P, R> {
  /** Brings the batch's part to the next round; resolves with what the round did. At most once. */
  join(part: P): Promise<R>;
  /** The batch will not join (it stopped early, or failed before joining): rounds stop waiting for it. */
  leave(): void;
}

interface Joined<P, R> {
  part: P;
  resolve: (result: R) => void;
  reject: (error: unknown) => void;
}

/**
 * Gathers the batches that are in hand at the same time into one round of work. kafkajs hands the
 * partitions of one fetch to concurrent eachBatch calls; alone, each would pay a job's Redis round
 * trips for the few events a partition brings at a modest rate. A round starts once every batch
 * taken has joined it or left, so it never waits for a batch that is not already in hand, and a
 * batch taken while a round runs goes to the next one.
 */
export class BatchRounds<P, R> {
  /** Batches taken and not yet joined or gone. */
  private inHand = 0;
  private joined: Joined<P, R>[] = [];

  constructor(private readonly runRound: (parts: P[]) => Promise<R>) {}

  /** Call as soon as a batch is in hand (before any await): a round starting meanwhile waits for it. */
  take(): BatchTicket<P, R> {
    this.inHand++;
    let open = true;
    const close = (): void => {
      if (!open) throw new Error('a batch ticket was used twice');
      open = false;
      this.inHand--;
    };
    return {
      join: (part) => {
        close();
        const result = new Promise<R>((resolve, reject) => this.joined.push({ part, resolve, reject }));
        this.startIfAllJoined();
        return result;
      },
      leave: () => {
        if (!open) return;
        close();
        this.startIfAllJoined();
      },
    };
  }

  private startIfAllJoined(): void {
    if (this.inHand > 0 || this.joined.length === 0) return;
    const round = this.joined;
    this.joined = [];
    Promise.resolve()
      .then(() => this.runRound(round.map(({ part }) => part)))
      .then(
        (result) => round.forEach(({ resolve }) => resolve(result)),
        (error: unknown) => round.forEach(({ reject }) => reject(error)),
      );
  }
}
