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

  // Issue 10: the cheap bound was the UTF-16 length, so texts of at most maxTokens code units were
  // never cut, whatever their tokens. These texts are 8,192 code units and 11,000 to 24,000 tokens.
  const hangul = String.fromCharCode(...Array.from({ length: 8192 }, (_, i) => 0xac00 + ((i * 37) % 11172)));
  const emoji = '😀🎉🚀🌍'.repeat(1024);
  const rareCjk = Array.from({ length: 8192 }, (_, i) => String.fromCodePoint(0x3400 + ((i * 7) % 6000))).join('');
  for (const [script, text] of [['Hangul', hangul], ['emoji', emoji], ['rare CJK (Extension A)', rareCjk]] as const) {
    for (const strategy of ['head', 'head_tail'] as const) {
      it(`cuts 8,192 code units of ${script} to 8,192 tokens (${strategy})`, () => {
        expect(text.length).toBe(8192);
        expect(encode(text).length).toBeGreaterThan(8192);
        const prepared = new Tokenizer('cl100k_base', 8192, strategy).prepare(text);
        expect(prepared.truncated).toBe(true);
        expect(prepared.tokens).toBeLessThanOrEqual(8192);
        // The count reported is the text's own, and no cut character left a U+FFFD behind.
        expect(encode(prepared.text).length).toBe(prepared.tokens);
        expect(prepared.text).not.toContain('\uFFFD');
        if (strategy === 'head') expect(text.startsWith(prepared.text)).toBe(true);
      });
    }
  }

  it('leaves ASCII under the limit untouched, however close to it', () => {
    const text = 'a'.repeat(8192);
    const prepared = new Tokenizer('cl100k_base', 8192, 'head').prepare(text);
    expect(prepared).toEqual({ text, tokens: encode(text).length, truncated: false });
  });
});
