// The talk page: one call at a time over /v1/stream (docs/protocol.md).
//
// Microphone -> capture worklet (resampled to the session's input rate, 20 ms PCM16
// frames) -> WebSocket; answer audio -> decoded here -> playback worklet (jitter buffer).
// Every event updates the turn it names; events of types this page does not know are
// ignored, as the protocol asks of clients.
//
// window.voicegateTalk exposes the call's figures (frames sent, answer audio played,
// each turn's latency) for the console and for the browser tests.

import { decodeAudio, describeClose, latencySegments, SEGMENTS, sessionStart } from "./protocol.js";

const config = JSON.parse(document.getElementById("vg-config").textContent);
const byId = (id) => document.getElementById(id);
const ui = {
  connect: byId("connect"),
  hangup: byId("hangup"),
  mute: byId("mute"),
  level: byId("level"),
  levelDb: byId("level-db"),
  status: byId("status"),
  message: byId("message"),
  instructions: byId("instructions"),
  turns: byId("turns"),
  log: byId("log"),
  stats: {
    session: byId("stat-session"),
    formats: byId("stat-formats"),
    sent: byId("stat-sent"),
    received: byId("stat-received"),
    played: byId("stat-played"),
    underruns: byId("stat-underruns"),
  },
};

// A frame louder than this (dBFS) and than the noise floor plus LOUD_OVER_FLOOR_DB is
// speech, for the page's own end-of-speech estimate (the rule of `voicegate talk`).
const LOUD_DBFS = -50;
const LOUD_OVER_FLOOR_DB = 6;
const FLOOR_MIN_DB = -120; // digital silence counts as this
const SEND_LOG_FRAMES = 3000; // a minute of 20 ms frames: far more than one turn
const LOG_LINES = 60;

const stats = {
  state: "idle",
  session: null,
  input: null,
  output: null,
  framesSent: 0,
  audioMessages: 0,
  audioBytes: 0,
  playedFrames: 0, // answer audio played, in 20 ms frames of the AudioContext's rate
  underruns: 0,
  events: [], // types of the events received, in order (unknown ones included)
  ignored: [], // types this page does not know
  turns: {},
  message: null,
};
window.voicegateTalk = stats;

let call = null;

class Call {
  constructor() {
    this.ws = null;
    this.ctx = null;
    this.stream = null;
    this.capture = null;
    this.playback = null;
    this.opened = false;
    this.started = false;
    this.hungUp = false;
    this.closed = false;
    this.lastError = null;
    this.streamMs = 0; // input audio sent, in ms: the node's audio positions count from it
    this.sendLog = []; // {endMs, at, db} of each frame sent
    this.noiseFloorDb = LOUD_DBFS - 10;
    this.audioTurn = null; // the turn the binary messages belong to
    this.audioFormat = null;
    this.playedByTurn = new Map();
  }

  async start() {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      return this.fail(
        "This browser lets only secure pages use the microphone: open the page over https:// " +
          "or on http://localhost.",
      );
    }
    // Made inside the click, before anything is awaited: every browser then lets it play.
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    const resumed = this.ctx.resume();
    setState("starting", "asking for the microphone");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (err) {
      return this.fail(microphoneMessage(err));
    }
    if (this.closed) return stream.getTracks().forEach((t) => t.stop()); // hung up meanwhile
    this.stream = stream;
    try {
      await this.ctx.audioWorklet.addModule(`${config.static}/capture-worklet.js?v=${config.version}`);
      await this.ctx.audioWorklet.addModule(`${config.static}/playback-worklet.js?v=${config.version}`);
    } catch (err) {
      return this.fail(`This browser cannot run the page's audio worklets: ${err.message}`);
    }
    await resumed;
    if (this.closed) return;
    this.capture = new AudioWorkletNode(this.ctx, "vg-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetRate: config.input_rate, frameMs: config.frame_ms },
    });
    this.capture.port.onmessage = (event) => this.onFrame(event.data);
    this.ctx.createMediaStreamSource(this.stream).connect(this.capture);
    // Connected so that every browser runs it; it writes only silence.
    this.capture.connect(this.ctx.destination);
    this.playback = new AudioWorkletNode(this.ctx, "vg-playback", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [this.ctx.destination.channelCount || 2],
      processorOptions: { jitterMs: config.jitter_ms },
    });
    this.playback.port.onmessage = (event) => this.onPlayback(event.data);
    this.playback.connect(this.ctx.destination);
    this.capture.port.postMessage({ type: "mute", muted: ui.mute.getAttribute("aria-pressed") === "true" });
    setState("connecting", "connecting to the node");
    const token = await sessionToken();
    if (!this.closed) this.connect(token);
  }

  connect(token) {
    this.token = token;
    const ws = new WebSocket(streamUrl(token));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.opened = true;
      ws.send(JSON.stringify(sessionStart(config, ui.instructions.value.trim())));
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") this.onEvent(event.data);
      else this.onAudio(event.data);
    };
    ws.onclose = (event) => this.onClose(event);
  }

  // -- microphone -> node -----------------------------------------------------------------

  onFrame(frame) {
    showLevel(frame.micDb);
    if (!this.started || this.ws?.readyState !== WebSocket.OPEN) return;
    this.ws.send(frame.pcm);
    this.streamMs += config.frame_ms;
    stats.framesSent += 1;
    const db = frame.sentDb;
    // The floor falls at once and rises slowly (1 dB/s), so speech does not lift it.
    const level = Math.max(FLOOR_MIN_DB, db);
    this.noiseFloorDb = level < this.noiseFloorDb ? level : this.noiseFloorDb + 0.02;
    this.sendLog.push({ endMs: this.streamMs, at: performance.now(), db });
    if (this.sendLog.length > SEND_LOG_FRAMES) this.sendLog.splice(0, this.sendLog.length - SEND_LOG_FRAMES);
    if (stats.framesSent % 25 === 0) renderStats();
  }

  // When the frame holding input position `ms` was sent (performance.now()).
  sentAt(ms) {
    const frame = this.sendLog.find((f) => f.endMs >= ms);
    return frame ? frame.at : null;
  }

  // The page's own end of speech for a turn the node ended at `audioEndMs`: the last
  // frame loud enough to be speech, looked for around the node's estimate.
  speechEnd(turn, audioEndMs) {
    const from = Math.max(turn.audioStartMs ?? 0, audioEndMs - 1000);
    const to = audioEndMs + 300;
    for (let i = this.sendLog.length - 1; i >= 0; i--) {
      const f = this.sendLog[i];
      if (f.endMs > to) continue;
      if (f.endMs <= from) break;
      if (f.db > LOUD_DBFS && f.db > this.noiseFloorDb + LOUD_OVER_FLOOR_DB) {
        return { at: f.at, source: "page", ms: f.endMs };
      }
    }
    const at = this.sentAt(audioEndMs);
    return at == null ? null : { at, source: "node", ms: audioEndMs };
  }

  // -- node -> page -------------------------------------------------------------------

  onEvent(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return logLine("a text message that is not JSON (ignored)");
    }
    if (!event || typeof event.type !== "string") return;
    stats.events.push(event.type);
    const handler = HANDLERS[event.type];
    if (!handler) {
      stats.ignored.push(event.type); // the protocol may grow: unknown events are ignored
      return;
    }
    logLine(describeEvent(event));
    handler(this, event);
  }

  onAudio(buffer) {
    stats.audioMessages += 1;
    stats.audioBytes += buffer.byteLength;
    const turnNo = this.audioTurn;
    if (turnNo == null || !this.audioFormat) return; // audio before response.audio.started
    const turn = turnView(turnNo);
    if (turn.data.cancelled) return; // behind a response.cancelled that already arrived
    const samples = decodeAudio(buffer, this.audioFormat.encoding);
    turn.data.receivedMs = (turn.data.receivedMs ?? 0) + (1000 * samples.length) / this.audioFormat.sample_rate;
    if (turn.data.receivedAt == null) {
      turn.data.receivedAt = performance.now();
      updateTurnFigures(this, turn);
    }
    this.playback.port.postMessage(
      { type: "audio", turn: turnNo, rate: this.audioFormat.sample_rate, samples },
      [samples.buffer],
    );
  }

  onPlayback(msg) {
    const turn = turnView(msg.turn);
    if (msg.type === "started") {
      turn.data.playedAt = this.contextToPerformance(msg.time);
      turn.setPhase("speaking");
      logLine(`playback started (turn ${msg.turn})`);
      updateTurnFigures(this, turn);
    } else if (msg.type === "progress" || msg.type === "ended") {
      this.playedByTurn.set(msg.turn, msg.played);
      const framesPerSample = 1 / ((this.ctx.sampleRate * config.frame_ms) / 1000);
      let played = 0;
      for (const samples of this.playedByTurn.values()) played += samples * framesPerSample;
      stats.playedFrames = Math.floor(played);
      turn.data.playedFrames = Math.floor(msg.played * framesPerSample);
      stats.underruns = msg.underruns ?? stats.underruns;
      if (msg.type === "ended") {
        turn.data.playback = msg.reason;
        logLine(`playback ${msg.reason === "done" ? "ended" : `stopped (${msg.reason})`} (turn ${msg.turn})`);
        if (msg.reason === "done") turn.setPhase(turn.data.cancelled ? "cancelled" : "done");
      }
      renderStats();
    }
  }

  // performance.now() at which a sample rendered at context time `time` left the speaker.
  contextToPerformance(time) {
    const stamp = this.ctx.getOutputTimestamp?.();
    if (stamp && stamp.performanceTime > 0) {
      return stamp.performanceTime + (time - stamp.contextTime) * 1000;
    }
    const outputLatency = (this.ctx.outputLatency || 0) + (this.ctx.baseLatency || 0);
    return performance.now() - (this.ctx.currentTime - time) * 1000 + outputLatency * 1000;
  }

  // -- ending -------------------------------------------------------------------------

  hangUp() {
    this.hungUp = true;
    if (this.ws?.readyState === WebSocket.OPEN) {
      setState("closing", "hanging up");
      this.ws.send(JSON.stringify({ type: "session.end" }));
      // The node closes with 1000; a node that does not is closed from here.
      setTimeout(() => this.ws?.readyState !== WebSocket.CLOSED && this.ws.close(1000), 3000);
    } else {
      this.ws?.close(1000);
      this.teardown();
      setState("idle", "not connected");
    }
  }

  async onClose(event) {
    const { code, reason } = event;
    logLine(`connection closed (${code}${reason ? ` ${reason}` : ""})`);
    this.teardown();
    let message = describeClose({
      code,
      reason,
      opened: this.opened,
      hungUp: this.hungUp,
      lastError: this.lastError,
    });
    if (!this.opened && !message) message = await handshakeMessage(this.token);
    if (message) this.fail(message, code);
    else setState("idle", "hung up");
  }

  fail(message, code = null) {
    this.teardown();
    showMessage(message, code);
    setState("failed", "not connected");
  }

  teardown() {
    if (this.closed) return;
    this.closed = true;
    this.started = false;
    this.capture?.port.postMessage({ type: "stop" });
    this.stream?.getTracks().forEach((t) => t.stop());
    this.ctx?.close().catch(() => {});
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    showLevel(-Infinity);
    renderStats();
    if (call === this) call = null;
    setButtons();
  }
}

// -- the protocol's events -------------------------------------------------------------

const HANDLERS = {
  "session.started"(c, e) {
    c.started = true;
    stats.session = e.session;
    stats.input = e.input;
    stats.output = e.output;
    setState("live", "connected: speak");
    renderStats();
  },
  "speech.started"(c, e) {
    const turn = turnView(e.turn);
    turn.data.audioStartMs = e.audio_start_ms;
    turn.setPhase("listening");
  },
  "speech.stopped"(c, e) {
    const turn = turnView(e.turn);
    turn.data.audioEndMs = e.audio_end_ms;
    const end = c.speechEnd(turn.data, e.audio_end_ms);
    if (end) {
      turn.data.speechEndAt = end.at;
      turn.data.speechEndMs = end.ms;
      turn.data.speechEndSource = end.source;
    }
    turn.data.nodeEndSentAt = c.sentAt(e.audio_end_ms);
    turn.setPhase("thinking");
  },
  "transcript.partial"(c, e) {
    const turn = turnView(e.turn);
    if (turn.data.final == null) turn.setTranscript(e.text, false);
  },
  "transcript.final"(c, e) {
    turnView(e.turn).setTranscript(e.text, true);
  },
  "response.started"(c, e) {
    turnView(e.turn).setPhase("thinking");
  },
  "response.text.delta"(c, e) {
    turnView(e.turn).appendAnswer(e.delta);
  },
  "response.audio.started"(c, e) {
    c.audioTurn = e.turn;
    c.audioFormat = { encoding: e.encoding, sample_rate: e.sample_rate };
  },
  "output.degraded"(c, e) {
    c.audioFormat = { encoding: e.encoding, sample_rate: e.sample_rate };
    stats.output = { ...stats.output, degraded: { encoding: e.encoding, sample_rate: e.sample_rate } };
    showMessage(`The node switched the answer audio to ${e.encoding} at ${e.sample_rate} Hz (${e.reason}).`);
    renderStats();
  },
  "response.done"(c, e) {
    const turn = turnView(e.turn);
    turn.data.done = true;
    turn.data.answer = e.text;
    turn.data.latency = e.latency_ms;
    turn.data.speculative = e.speculative;
    turn.setAnswer(e.text);
    c.playback.port.postMessage({ type: "end", turn: e.turn });
    if (turn.data.playback === "done") turn.setPhase("done");
    updateTurnFigures(c, turn);
  },
  "response.cancelled"(c, e) {
    // Barge-in: the answer stops now, whatever the jitter buffer still holds.
    c.playback.port.postMessage({ type: "flush", turn: e.turn });
    if (c.audioTurn === e.turn) c.audioTurn = null;
    const turn = turnView(e.turn);
    turn.data.cancelled = e.reason;
    turn.setPhase("cancelled", `response.cancelled · ${e.reason}`);
  },
  error(c, e) {
    c.lastError = e;
    if (!e.fatal) showMessage(`The node refused a message: ${e.message} (${e.code}).`);
  },
};

// -- the view of the turns -------------------------------------------------------------

const turnViews = new Map();

function turnView(n) {
  let view = turnViews.get(n);
  if (!view) {
    // The node renumbers a turn it had started to answer when the caller goes on talking
    // (the speculation is voided and the turn continues under the next number): an
    // earlier turn that never got a final transcript is that provisional one.
    for (const [m, older] of turnViews) {
      if (m < n && older.data.final == null && !older.data.superseded) older.supersede(n);
    }
    view = new TurnView(n);
    turnViews.set(n, view);
    stats.turns[n] = view.data;
  }
  return view;
}

class TurnView {
  constructor(n) {
    this.data = { turn: n, partial: null, final: null, answer: "", phase: "listening" };
    const li = document.createElement("li");
    li.className = "turn";
    li.dataset.turn = String(n);
    li.innerHTML = `
      <div class="turn-head"><span class="turn-no"></span><span class="phase"></span></div>
      <p class="you"><span class="who">you</span> <span class="transcript"></span></p>
      <p class="agent"><span class="who">agent</span> <span class="answer"></span></p>
      <div class="latency" hidden>
        <div class="bar" role="img"></div>
        <p class="figures"></p>
        <p class="breakdown"></p>
      </div>`;
    li.querySelector(".turn-no").textContent = `turn ${n}`;
    this.el = li;
    this.phaseEl = li.querySelector(".phase");
    this.transcriptEl = li.querySelector(".transcript");
    this.answerEl = li.querySelector(".answer");
    this.latencyEl = li.querySelector(".latency");
    this.barEl = li.querySelector(".bar");
    this.barEl.dataset.turn = String(n);
    this.figuresEl = li.querySelector(".figures");
    this.breakdownEl = li.querySelector(".breakdown");
    ui.turns.prepend(li);
    this.setPhase("listening");
  }

  supersede(by) {
    this.data.superseded = by;
    this.el.hidden = true;
  }

  setPhase(phase, label = phase) {
    if (this.data.phase === "cancelled" && phase !== "cancelled") return;
    this.data.phase = phase;
    this.el.dataset.phase = phase;
    this.phaseEl.textContent = label;
  }

  setTranscript(text, final) {
    if (final) this.data.final = text;
    else this.data.partial = text;
    this.transcriptEl.textContent = text;
    this.transcriptEl.classList.toggle("partial", !final);
  }

  appendAnswer(delta) {
    this.data.answer += delta;
    this.answerEl.textContent = this.data.answer;
  }

  setAnswer(text) {
    this.answerEl.textContent = text;
  }
}

// The turn's own figures: the page's voice-to-voice and, once response.done is in, the bar.
function updateTurnFigures(c, turn) {
  const d = turn.data;
  if (d.speechEndAt != null && d.receivedAt != null) d.v2vReceivedMs = d.receivedAt - d.speechEndAt;
  if (d.speechEndAt != null && d.playedAt != null) d.v2vPlayedMs = d.playedAt - d.speechEndAt;
  if (d.nodeEndSentAt != null && d.receivedAt != null) d.receivedFromNodeEndMs = d.receivedAt - d.nodeEndSentAt;
  if (!d.latency) return;
  const segments = latencySegments(d.latency, d);
  d.segments = Object.fromEntries(segments.map((s) => [s.key, s.ms]));
  renderBars();
  const parts = [];
  if (d.v2vPlayedMs != null) parts.push(`voice-to-voice here ${fmt(d.v2vPlayedMs)} ms (first audio played)`);
  if (d.v2vReceivedMs != null) parts.push(`${fmt(d.v2vReceivedMs)} ms to first audio received`);
  parts.push(`node ${fmt(d.latency.voice_to_voice)} ms`);
  if (d.speculative) parts.push("speculative");
  turn.figuresEl.textContent = parts.join(" · ");
  turn.latencyEl.hidden = false;
}

// Every bar on one scale, so that turns compare at a glance.
function renderBars() {
  let scale = 1000;
  for (const d of Object.values(stats.turns)) {
    if (d.segments) scale = Math.max(scale, total(d.segments));
  }
  for (const [n, view] of turnViews) {
    const d = view.data;
    if (!d.segments) continue;
    const bar = view.barEl;
    bar.replaceChildren();
    bar.style.width = `${(100 * total(d.segments)) / scale}%`;
    const words = [];
    for (const { key, label } of SEGMENTS) {
      const ms = d.segments[key];
      if (!(ms > 0)) continue;
      const seg = document.createElement("span");
      seg.className = `seg seg-${key}`;
      seg.dataset.key = key;
      seg.style.flexGrow = String(ms);
      seg.title = `${label}: ${fmt(ms)} ms`;
      bar.append(seg);
      words.push(`${label} ${fmt(ms)} ms`);
    }
    bar.setAttribute("aria-label", `turn ${n}: ${words.join(", ")}`);
    view.breakdownEl.textContent = words.join(" · ");
  }
}

const total = (segments) => Object.values(segments).reduce((a, b) => a + b, 0);
const fmt = (ms) => (ms >= 100 ? ms.toFixed(0) : ms.toFixed(1));

// -- the rest of the page ---------------------------------------------------------------

function describeEvent(e) {
  const turn = e.turn != null ? ` (turn ${e.turn})` : "";
  if (e.type === "response.cancelled") return `response.cancelled: ${e.reason}${turn}`;
  if (e.type === "error") return `error ${e.code}: ${e.message}`;
  return `${e.type}${turn}`;
}

function logLine(text) {
  const top = ui.log.firstElementChild;
  if (top && top.dataset.text === text) {
    // A run of the same event (text deltas, partial transcripts) is one line.
    top.dataset.count = String(Number(top.dataset.count) + 1);
    top.textContent = `${text} ×${top.dataset.count}`;
    return;
  }
  const li = document.createElement("li");
  li.dataset.text = text;
  li.dataset.count = "1";
  li.textContent = text;
  ui.log.prepend(li);
  while (ui.log.childElementCount > LOG_LINES) ui.log.lastElementChild.remove();
}

function setState(state, words) {
  stats.state = state;
  ui.status.dataset.state = state;
  ui.status.textContent = words;
  setButtons();
}

function setButtons() {
  const active = call !== null && !call.closed;
  ui.connect.disabled = active;
  ui.hangup.disabled = !active;
  ui.mute.disabled = !active;
}

function showMessage(text, code = null) {
  stats.message = text;
  ui.message.textContent = text;
  ui.message.dataset.code = code == null ? "" : String(code);
  ui.message.hidden = false;
}

function clearMessage() {
  stats.message = null;
  ui.message.hidden = true;
  ui.message.textContent = "";
}

function showLevel(db) {
  const shown = Number.isFinite(db) ? Math.max(-60, Math.min(0, db)) : -60;
  ui.level.style.width = `${((shown + 60) / 60) * 100}%`;
  ui.levelDb.textContent = Number.isFinite(db) && db > -60 ? `${db.toFixed(0)} dB` : "silent";
}

function renderStats() {
  const s = ui.stats;
  s.session.textContent = stats.session ?? "–";
  const f = (x) => (x ? `${x.encoding} ${x.sample_rate / 1000} kHz` : "–");
  const fallback = stats.output?.fallback ? `, fallback ${f(stats.output.fallback)}` : "";
  const degraded = stats.output?.degraded ? ` (now ${f(stats.output.degraded)})` : "";
  s.formats.textContent = stats.input ? `in ${f(stats.input)} · out ${f(stats.output)}${fallback}${degraded}` : "–";
  s.sent.textContent = String(stats.framesSent);
  s.received.textContent = `${stats.audioMessages} (${(stats.audioBytes / 1024).toFixed(0)} KiB)`;
  s.played.textContent = String(stats.playedFrames);
  s.underruns.textContent = String(stats.underruns);
}

function microphoneMessage(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this page (the icon in the address bar) and press Connect again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in and press Connect again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone is in use by another program or could not be started.";
    default:
      return `The microphone could not be opened: ${err?.message ?? err}`;
  }
}

// The handshake failed (the browser does not say why): ask the node whether it is up,
// to tell a refused key from a node that is down.
async function handshakeMessage(token) {
  let up = false;
  try {
    up = (await fetch("/healthz", { cache: "no-store" })).ok;
  } catch {
    up = false;
  }
  if (!up) return "The node cannot be reached. Check that it is running, then press Connect again.";
  if (token) return "The node refused this page's key: it is wrong or has expired. Get a new link with a fresh token.";
  return "The node refused the connection. It may require a key: open this page with ?token=... from its operator.";
}

// Where a node with keys gets its short-lived session token from. Today the token comes
// from this page's own address (`/talk?token=...`, a link the operator hands out). When
// the node issues tokens itself (`POST /v1/tokens` with an API key), fetch one here; the
// rest of the page only passes it on as `?token=` of the stream URL.
async function sessionToken() {
  return new URLSearchParams(window.location.search).get("token");
}

function streamUrl(token) {
  const url = new URL(config.stream_path, window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.href;
}

ui.connect.addEventListener("click", () => {
  if (call) return;
  clearMessage();
  call = new Call();
  setButtons();
  call.start().catch((err) => call?.fail(`The call could not start: ${err.message}`));
});
ui.hangup.addEventListener("click", () => call?.hangUp());
ui.mute.addEventListener("click", () => {
  const muted = ui.mute.getAttribute("aria-pressed") !== "true";
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.textContent = muted ? "Unmute" : "Mute";
  call?.capture?.port.postMessage({ type: "mute", muted });
});
window.addEventListener("pagehide", () => call?.hangUp());
renderStats();
stats.ready = true;
