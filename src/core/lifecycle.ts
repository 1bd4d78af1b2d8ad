/**
 * Resources are released last-in-first-out from one list; every release runs even when one fails,
 * and close() is idempotent (a second call returns the same promise).
 */
export class Releasers {
  private readonly releasers: { name: string; release: () => Promise<unknown> | unknown }[] = [];
  private closing: Promise<void> | undefined;

  add(name: string, release: () => Promise<unknown> | unknown): void {
    if (this.closing) throw new Error(`cannot register ${name}: already closing`);
    this.releasers.push({ name, release });
  }

  close(onError?: (name: string, error: unknown) => void): Promise<void> {
    this.closing ??= (async () => {
      const failures: unknown[] = [];
      for (const { name, release } of this.releasers.reverse()) {
        try {
          await release();
        } catch (error) {
          failures.push(error);
          onError?.(name, error);
        }
      }
      if (failures.length > 0 && !onError) throw new AggregateError(failures, 'some resources failed to close');
    })();
    return this.closing;
  }
}
