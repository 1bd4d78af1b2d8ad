import { EmbeddingsError, errorMessage } from '../core/errors.js';
import { withRetry } from '../core/retry.js';

/** OpenAI's batch object, the fields the indexer reads. */
export interface Batch {
  id: string;
  status: 'validating' | 'in_progress' | 'finalizing' | 'completed' | 'failed' | 'expired' | 'cancelling' | 'cancelled';
  output_file_id: string | null;
  error_file_id: string | null;
  request_counts?: { total: number; completed: number; failed: number };
  errors?: { data?: { code?: string; message?: string }[] } | null;
}

/** One line of a batch's output or error file. */
export interface BatchResultLine {
  custom_id: string | null;
  response: { status_code: number; body: unknown } | null;
  error: { code?: string; message?: string } | null;
}

export const FINISHED: ReadonlySet<Batch['status']> = new Set(['completed', 'failed', 'expired', 'cancelled']);

/**
 * The OpenAI Batch API, as embeddings use it: upload a JSONL file of requests, create a batch
 * over it (24 h window, half the price of synchronous requests), poll it, download its output and
 * error files. Transient failures (network, 429, 5xx) are retried here; anything else is final.
 */
export class BatchApiClient {
  constructor(
    private readonly options: { baseUrl: string; apiKey: string | undefined; timeoutMs: number },
  ) {}

  async uploadRequests(jsonl: string, filename: string): Promise<string> {
    const form = new FormData();
    form.set('purpose', 'batch');
    form.set('file', new Blob([jsonl], { type: 'application/jsonl' }), filename);
    const file = (await this.call('POST', '/files', form)) as { id: string };
    return file.id;
  }

  async createBatch(inputFileId: string, metadata: Record<string, string>): Promise<Batch> {
    return (await this.call('POST', '/batches', JSON.stringify({ input_file_id: inputFileId, endpoint: '/v1/embeddings', completion_window: '24h', metadata }))) as Batch;
  }

  async getBatch(id: string): Promise<Batch> {
    return (await this.call('GET', `/batches/${encodeURIComponent(id)}`)) as Batch;
  }

  /** A file's lines, parsed. */
  async resultLines(fileId: string): Promise<BatchResultLine[]> {
    const text = (await this.call('GET', `/files/${encodeURIComponent(fileId)}/content`, undefined, 'text')) as string;
    return text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as BatchResultLine);
  }

  private call(method: 'GET' | 'POST', path: string, body?: FormData | string, as: 'json' | 'text' = 'json'): Promise<unknown> {
    return withRetry(async () => {
      let response: Response;
      try {
        response = await fetch(`${this.options.baseUrl}${path}`, {
          method,
          body,
          headers: { ...(this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {}), ...(typeof body === 'string' ? { 'content-type': 'application/json' } : {}) },
          signal: AbortSignal.timeout(this.options.timeoutMs),
        });
      } catch (error) {
        throw new EmbeddingsError('EMBEDDINGS_UNAVAILABLE', `Batch API ${method} ${path}: ${errorMessage(error)}`, { canRetry: true, cause: error });
      }
      if (response.ok) return as === 'json' ? response.json() : response.text();
      const detail = await response.text().catch(() => '');
      const retryable = response.status === 429 || response.status >= 500;
      throw new EmbeddingsError(retryable ? 'EMBEDDINGS_UNAVAILABLE' : 'EMBEDDINGS_REJECTED', `Batch API ${method} ${path} answered ${response.status}: ${detail.slice(0, 500)}`, { canRetry: retryable, details: { status: response.status } });
    });
  }
}
