// The speaker side: plays the answer audio of one turn at a time through a small jitter
// buffer.
//
// Messages in:  {type: "audio", turn, rate, samples}  decoded audio at the output rate
//               {type: "end", turn}     the turn's audio is complete (response.done)
//               {type: "flush", turn}   stop now (response.cancelled): drop what is queued
// Messages out: {type: "started", turn, time}   first sample of the turn played (context time)
//               {type: "ended", turn, reason, played}   played out, or flushed
//               {type: "progress", turn, played, underruns}  a few times a second
//
// A turn starts playing once `jitterMs` of it is queued, or at once when its audio is
// complete; an underrun before the end re-buffers the same amount, so a late network
// burst costs one short gap instead of a crackle per packet.

import { Resampler } from "./resampler.js";

const PROGRESS_EVERY_S = 0.1;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.jitterSamples = Math.round((sampleRate * options.processorOptions.jitterMs) / 1000);
    this.resamplers = new Map(); // output rate -> Resampler to this context's rate
    this.reset(0);
    this.lastProgress = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  reset(turn) {
    this.turn = turn;
    this.chunks = [];
    this.offset = 0; // read position in chunks[0]
    this.queued = 0;
    this.complete = false;
    this.playing = false;
    this.started = false;
    this.played = 0; // samples of this turn played
    this.underruns = 0;
  }

  onMessage(msg) {
    if (msg.type === "audio") {
      if (msg.turn !== this.turn) {
        if (this.turn && this.started) this.finish("replaced");
        this.reset(msg.turn);
      }
      let resampler = this.resamplers.get(msg.rate);
      if (!resampler) {
        resampler = new Resampler(msg.rate, sampleRate);
        this.resamplers.set(msg.rate, resampler);
      }
      const samples = resampler.push(msg.samples);
      if (samples.length) {
        this.chunks.push(samples);
        this.queued += samples.length;
      }
    } else if (msg.type === "end" && msg.turn === this.turn) {
      this.complete = true;
      if (!this.queued) this.finish("done");
    } else if (msg.type === "flush" && msg.turn === this.turn) {
      this.finish("cancelled");
    }
  }

  finish(reason) {
    if (this.turn) {
      this.port.postMessage({
        type: "ended",
        turn: this.turn,
        reason,
        played: this.played,
        underruns: this.underruns,
        started: this.started,
      });
    }
    this.reset(0);
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const first = out[0];
    if (!this.playing && this.turn && (this.queued >= this.jitterSamples || (this.complete && this.queued))) {
      this.playing = true;
      if (!this.started) {
        this.started = true;
        this.port.postMessage({ type: "started", turn: this.turn, time: currentTime });
      }
    }
    if (this.playing) {
      let written = 0;
      while (written < first.length && this.chunks.length) {
        const chunk = this.chunks[0];
        const take = Math.min(first.length - written, chunk.length - this.offset);
        first.set(chunk.subarray(this.offset, this.offset + take), written);
        written += take;
        this.offset += take;
        if (this.offset === chunk.length) {
          this.chunks.shift();
          this.offset = 0;
        }
      }
      this.queued -= written;
      this.played += written;
      if (!this.queued) {
        if (this.complete) {
          this.finish("done");
        } else {
          this.underruns += 1;
          this.playing = false; // re-buffer
        }
      }
    }
    for (let c = 1; c < out.length; c++) out[c].set(first);
    if (this.turn && currentTime - this.lastProgress >= PROGRESS_EVERY_S) {
      this.lastProgress = currentTime;
      this.port.postMessage({ type: "progress", turn: this.turn, played: this.played, underruns: this.underruns });
    }
    return true;
  }
}

registerProcessor("vg-playback", PlaybackProcessor);
