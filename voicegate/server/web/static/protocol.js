// What the page needs of docs/protocol.md, without any DOM: the session.start message,
// audio decoding, the latency breakdown of a turn and the words for a close.

export const BYTES_PER_SAMPLE = { pcm16: 2, mulaw: 1 };

// session.start: the input the capture worklet produces, the output the page plays best,
// and a cheaper fallback the node may switch to when this page cannot keep up.
export function sessionStart(config, instructions) {
  const msg = {
    type: "session.start",
    input: { encoding: "pcm16", sample_rate: config.input_rate },
    output: {
      encoding: config.output.encoding,
      sample_rate: config.output.sample_rate,
      fallback: config.fallback,
    },
  };
  if (instructions) msg.instructions = instructions;
  return msg;
}

// Decoded answer audio as floats in [-1, 1].
export function decodeAudio(buffer, encoding) {
  if (encoding === "mulaw") {
    const bytes = new Uint8Array(buffer);
    const out = new Float32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) out[i] = MULAW[bytes[i]];
    return out;
  }
  const view = new DataView(buffer);
  const out = new Float32Array(buffer.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

// G.711 mu-law, as voicegate/core/codec.py decodes it.
const MULAW = (() => {
  const table = new Float32Array(256);
  for (let i = 0; i < 256; i++) {
    const u = ~i & 0xff;
    const exponent = (u >> 4) & 0x07;
    const mantissa = u & 0x0f;
    const magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    table[i] = (u & 0x80 ? -magnitude : magnitude) / 32768;
  }
  return table;
})();

// The stacked bar of one turn: the server's stages (latency_ms of response.done), then
// what only the page sees. `network` is the page's own voice-to-voice at the first answer
// message received minus the server's (both measured from the same end of speech, the
// node's audio_end_ms); `playout` is the jitter buffer and the audio output.
export const SEGMENTS = [
  { key: "end_of_turn_silence", label: "end-of-turn silence" },
  { key: "vad", label: "VAD" },
  { key: "stt", label: "STT" },
  { key: "llm_first_token", label: "LLM first token" },
  { key: "tts_first_audio", label: "TTS first audio" },
  { key: "gateway", label: "gateway" },
  { key: "network", label: "network" },
  { key: "playout", label: "playout" },
];

export function latencySegments(serverLatency, page) {
  const values = {};
  for (const { key } of SEGMENTS) values[key] = Math.max(0, Number(serverLatency?.[key]) || 0);
  const server = Number(serverLatency?.voice_to_voice);
  if (page.receivedFromNodeEndMs != null && Number.isFinite(server)) {
    values.network = Math.max(0, page.receivedFromNodeEndMs - server);
  }
  if (page.playedAt != null && page.receivedAt != null) {
    values.playout = Math.max(0, page.playedAt - page.receivedAt);
  }
  return SEGMENTS.map((s) => ({ ...s, ms: values[s.key] }));
}

// A message for a closed connection, or null when nothing needs saying.
export function describeClose({ code, reason, opened, hungUp, lastError }) {
  if (code === 1013 || lastError?.code === "at_capacity") {
    return "The node is full (1013): every session it can take is in use. Try again in a moment.";
  }
  if (hungUp && (code === 1000 || code === 1005)) return null;
  if (code === 1001 || lastError?.code === "server_shutdown") {
    return "The node is shutting down (1001). Connect again once it is back.";
  }
  if (lastError?.fatal) {
    return `The node ended the session: ${lastError.message} (${lastError.code}, close ${code}).`;
  }
  if (code === 1000) return "The node ended the session.";
  if (!opened) return null; // the handshake failed: the caller probes the node and says why
  const why = reason ? `: ${reason}` : "";
  return `The connection to the node dropped (close ${code}${why}). Press Connect to start a new session.`;
}
