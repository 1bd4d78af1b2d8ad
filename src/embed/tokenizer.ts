import * as cl100k from 'gpt-tokenizer/encoding/cl100k_base';
import * as o200k from 'gpt-tokenizer/encoding/o200k_base';

export type TruncationStrategy = 'head' | 'head_tail';
export type TokenizerName = 'cl100k_base' | 'o200k_base';

export interface PreparedText {
  /** The text as it will be embedded (and hashed): cut on token boundaries when too long. */
  text: string;
  tokens: number;
  truncated: boolean;
}

const ENCODINGS = { cl100k_base: cl100k, o200k_base: o200k } as const;

/**
 * Counts and cuts text with the model's own tokenizer (cl100k_base for OpenAI's text-embedding-3
 * and ada-002), never by characters: a character cut can exceed the limit for some scripts and
 * waste most of it for others. `head_tail` keeps the start and the end (titles and closing
 * specifications both survive).
 */
export class Tokenizer {
  private readonly encoding: (typeof ENCODINGS)[TokenizerName];

  constructor(
    readonly name: TokenizerName,
    private readonly maxTokens: number,
    private readonly strategy: TruncationStrategy,
  ) {
    this.encoding = ENCODINGS[name];
  }

  prepare(text: string): PreparedText {
    // Cheap upper bound first: a BPE token covers at least one UTF-8 byte, so no text has more
    // tokens than bytes. Not UTF-16 code units: a Hangul syllable is one unit and up to 3 tokens.
    if (Buffer.byteLength(text, 'utf8') <= this.maxTokens) return { text, tokens: this.encoding.countTokens(text), truncated: false };
    const tokens = this.encoding.encode(text);
    if (tokens.length <= this.maxTokens) return { text, tokens: tokens.length, truncated: false };
    return this.cut(text, tokens);
  }

  /**
   * Keeps the head (and the tail) of the tokens, then counts the text they decode to: a cut through
   * a multi-byte character, or the seam between head and tail, can re-encode to a token more than
   * was kept. One token less is kept until the text fits, so the count returned is the text's own.
   */
  private cut(text: string, tokens: number[]): PreparedText {
    let head = this.strategy === 'head' ? this.maxTokens : Math.ceil(this.maxTokens / 2);
    let tail = this.maxTokens - head;
    for (;;) {
      const kept = this.decodeHead(text, tokens.slice(0, head)) + (tail > 0 ? this.decodeTail(text, tokens.slice(tokens.length - tail)) : '');
      const count = this.encoding.countTokens(kept);
      if (count <= this.maxTokens) return { text: kept, tokens: count, truncated: true };
      if (head >= tail) head -= 1;
      else tail -= 1;
    }
  }

  /** Byte-level tokens can end inside a character, which decodes to U+FFFD: that fragment is dropped, not embedded. */
  private decodeHead(text: string, tokens: number[]): string {
    const decoded = this.encoding.decode(tokens);
    return text.startsWith(decoded) ? decoded : decoded.replace(/\uFFFD+$/u, '');
  }

  private decodeTail(text: string, tokens: number[]): string {
    const decoded = this.encoding.decode(tokens);
    return text.endsWith(decoded) ? decoded : decoded.replace(/^\uFFFD+/u, '');
  }
}
