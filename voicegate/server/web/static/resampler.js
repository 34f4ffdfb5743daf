// A streaming windowed-sinc resampler for mono float audio, used by both worklets:
// the microphone (the AudioContext's rate) down to the session's input rate, and the
// answer (the session's output rate) up to the AudioContext's rate.
//
// The kernel's cutoff is the lower of the two Nyquist frequencies, so downsampling does
// not alias; it is tabulated once (with linear interpolation between table points) so
// that no trigonometry runs per sample.

const ZERO_CROSSINGS = 12; // kernel half-width, in periods of the cutoff
const TABLE_STEPS = 256; // table points per input sample of kernel offset
const CUTOFF = 0.94; // of the lower Nyquist: leaves room for the window's transition band

export class Resampler {
  constructor(inRate, outRate) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError(`bad rates ${inRate} -> ${outRate}`);
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    this.scale = Math.min(1, outRate / inRate) * CUTOFF;
    this.half = Math.ceil(ZERO_CROSSINGS / this.scale); // input samples each side
    this.table = kernelTable(this.scale, this.half);
    // History starts with `half` zeros: the first output sample sits on input sample 0.
    this.buf = new Float32Array(4096);
    this.len = this.half;
    this.pos = this.half; // position of the next output sample, in buf's indices
  }

  get passthrough() {
    return this.inRate === this.outRate;
  }

  // Resample `input` (Float32Array); returns the output samples it completes.
  push(input) {
    if (this.passthrough) return Float32Array.from(input);
    this.ensure(this.len + input.length);
    this.buf.set(input, this.len);
    this.len += input.length;
    const last = this.len - this.half; // the kernel of an output at pos needs pos + half
    const count = Math.max(0, Math.ceil((last - this.pos) / this.step));
    const out = new Float32Array(count);
    const { buf, table, half, scale } = this;
    let pos = this.pos;
    for (let n = 0; n < count; n++) {
      const base = Math.floor(pos);
      const frac = pos - base;
      let acc = 0;
      for (let k = -half + 1; k <= half; k++) {
        const t = Math.abs(k - frac) * TABLE_STEPS;
        const i = t | 0;
        const w = table[i] + (table[i + 1] - table[i]) * (t - i);
        acc += buf[base + k] * w;
      }
      out[n] = acc * scale;
      pos += this.step;
    }
    // Keep only the history the next output still needs.
    const keep = Math.floor(pos) - half + 1;
    if (keep > 0) {
      buf.copyWithin(0, keep, this.len);
      this.len -= keep;
      pos -= keep;
    }
    this.pos = pos;
    return out;
  }

  ensure(size) {
    if (size <= this.buf.length) return;
    let capacity = this.buf.length;
    while (capacity < size) capacity *= 2;
    const grown = new Float32Array(capacity);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }
}

// sinc(scale * t) under a Blackman window, for t = 0 .. half + 1 in 1/TABLE_STEPS steps
// (one extra point so that interpolation never reads past the end).
function kernelTable(scale, half) {
  const size = (half + 1) * TABLE_STEPS + 2;
  const table = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const t = i / TABLE_STEPS;
    if (t >= half) continue;
    const x = Math.PI * scale * t;
    const sinc = t === 0 ? 1 : Math.sin(x) / x;
    const w = 0.42 + 0.5 * Math.cos((Math.PI * t) / half) + 0.08 * Math.cos((2 * Math.PI * t) / half);
    table[i] = sinc * w;
  }
  return table;
}
