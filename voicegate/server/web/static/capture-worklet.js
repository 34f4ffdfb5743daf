// The microphone side: resamples the capture to the session's input rate and posts one
// PCM16 frame (little-endian, `frameMs` long) at a time to the page, which sends each as
// one binary message of /v1/stream.
//
// Muted, the frames keep coming as silence: the node decides the end of a turn from the
// silence it receives, so the stream must never pause.

import { Resampler } from "./resampler.js";

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameMs } = options.processorOptions;
    this.resampler = new Resampler(sampleRate, targetRate);
    this.frameSamples = Math.round((targetRate * frameMs) / 1000);
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.sumSquares = 0; // of the frame being filled, as sent (zero while muted)
    this.micSquares = 0; // of the microphone itself, for the meter
    this.muted = false;
    this.running = true;
    this.silentBlock = new Float32Array(128);
    this.port.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === "mute") this.muted = Boolean(msg.muted);
      else if (msg.type === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    // No input channel yet (the track is starting, or ended): the stream goes on as silence.
    const channel = inputs[0] && inputs[0][0] ? inputs[0][0] : this.silentBlock;
    const samples = this.resampler.push(channel);
    for (let i = 0; i < samples.length; i++) {
      const mic = Math.max(-1, Math.min(1, samples[i]));
      const sent = this.muted ? 0 : mic;
      this.micSquares += mic * mic;
      this.sumSquares += sent * sent;
      this.frame[this.fill++] = sent < 0 ? sent * 0x8000 : sent * 0x7fff;
      if (this.fill === this.frameSamples) this.flush();
    }
    return true;
  }

  flush() {
    const n = this.frameSamples;
    const pcm = this.frame.buffer;
    this.port.postMessage(
      {
        type: "frame",
        pcm,
        // dBFS of the frame as sent, and of the microphone (the meter shows it muted too)
        sentDb: toDb(this.sumSquares / n),
        micDb: toDb(this.micSquares / n),
      },
      [pcm],
    );
    this.frame = new Int16Array(n);
    this.fill = 0;
    this.sumSquares = 0;
    this.micSquares = 0;
  }
}

function toDb(meanSquare) {
  return meanSquare > 0 ? 10 * Math.log10(meanSquare) : -Infinity;
}

registerProcessor("vg-capture", CaptureProcessor);
