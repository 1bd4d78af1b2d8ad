import { describe, expect, it } from 'vitest';
import { encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { Tokenizer } from '../../../src/embed/tokenizer.js';

describe('Tokenizer', () => {
  it('leaves text within the limit alone and counts its tokens', () => {
    const prepared = new Tokenizer('cl100k_base', 100, 'head').prepare('Trail running shoe, waterproof');
    expect(prepared).toEqual({ text: 'Trail running shoe, waterproof', tokens: encode('Trail running shoe, waterproof').length, truncated: false });
  });

  it('cuts on token boundaries to exactly the limit, keeping the head', () => {
    const text = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
    const prepared = new Tokenizer('cl100k_base', 50, 'head').prepare(text);
    expect(prepared.truncated).toBe(true);
    expect(prepared.tokens).toBe(50);
    expect(encode(prepared.text).length).toBeLessThanOrEqual(50);
    expect(text.startsWith(prepared.text)).toBe(true);
  });

  it('keeps head and tail with head_tail', () => {
    const text = `START ${'filler '.repeat(500)}END`;
    const prepared = new Tokenizer('cl100k_base', 20, 'head_tail').prepare(text);
    expect(prepared.text.startsWith('START')).toBe(true);
    expect(prepared.text.endsWith('END')).toBe(true);
    expect(encode(prepared.text).length).toBeLessThanOrEqual(20);
  });

  it('never cuts by characters: CJK text over the limit in tokens is cut, under it is kept', () => {
    const cjk = '防水トレイルランニングシューズ'.repeat(40);
    const prepared = new Tokenizer('cl100k_base', 100, 'head').prepare(cjk);
    expect(prepared.truncated).toBe(true);
    expect(encode(prepared.text).length).toBeLessThanOrEqual(100);
  });
});
