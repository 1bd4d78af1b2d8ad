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
    // Cheap upper bound first: no text has more tokens than UTF-16 code units.
    if (text.length <= this.maxTokens) return { text, tokens: this.encoding.countTokens(text), truncated: false };
    const tokens = this.encoding.encode(text);
    if (tokens.length <= this.maxTokens) return { text, tokens: tokens.length, truncated: false };
    let kept: number[];
    if (this.strategy === 'head') {
      kept = tokens.slice(0, this.maxTokens);
    } else {
      const head = Math.ceil(this.maxTokens / 2);
      kept = [...tokens.slice(0, head), ...tokens.slice(tokens.length - (this.maxTokens - head))];
    }
    return { text: this.encoding.decode(kept), tokens: kept.length, truncated: true };
  }
}
