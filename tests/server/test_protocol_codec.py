"""Wire audio formats and G.711 mu-law (voicegate.core.codec)."""

from __future__ import annotations

import numpy as np
import pytest

from voicegate.core import codec
from voicegate.core.codec import AudioFormat, Encoding

# ITU-T G.711 Table 2a (mu-law): wire code -> decoded value. The standard gives the
# decoder output in units of the 14-bit linear scale; the 16-bit values are 4 times that.
G711_MULAW_DECODE_14BIT = {
    0xFF: 0,
    0xFE: 2,
    0xF0: 30,
    0xEF: 33,
    0xE0: 93,
    0xDF: 99,
    0xD0: 219,
    0xCF: 231,
    0xC0: 471,
    0xBF: 495,
    0xB0: 975,
    0xAF: 1023,
    0xA0: 1983,
    0x9F: 2079,
    0x90: 3999,
    0x8F: 4191,
    0x80: 8031,
    0x7F: 0,
    0x7E: -2,
    0x70: -30,
    0x00: -8031,
}

# 14-bit magnitudes at which the code changes (decision values of Table 2a), with the
# code (wire, positive) just below and at the threshold.
G711_MULAW_DECISIONS = [
    (1, 0xFF, 0xFE),
    (31, 0xF0, 0xEF),
    (95, 0xE0, 0xDF),
    (223, 0xD0, 0xCF),
    (479, 0xC0, 0xBF),
    (991, 0xB0, 0xAF),
    (2015, 0xA0, 0x9F),
    (4063, 0x90, 0x8F),
    (7903, 0x81, 0x80),
]


def test_decode_matches_g711_table() -> None:
    decoded = codec.mulaw_decode(bytes(G711_MULAW_DECODE_14BIT))
    assert decoded.dtype == np.int16
    assert decoded.tolist() == [4 * v for v in G711_MULAW_DECODE_14BIT.values()]


@pytest.mark.parametrize(("threshold", "below", "at"), G711_MULAW_DECISIONS)
def test_encode_decision_values(threshold: int, below: int, at: int) -> None:
    pcm = np.array([4 * (threshold - 1), 4 * threshold], dtype=np.int16)
    assert codec.mulaw_encode(pcm) == bytes([below, at])
    # Negative samples get the same codes without the sign bit (0 stays positive zero).
    negative = [
        code if value == 0 else code & 0x7F for value, code in zip(pcm, (below, at), strict=True)
    ]
    assert codec.mulaw_encode(-pcm) == bytes(negative)


def test_encode_extremes_and_clipping() -> None:
    pcm = np.array([0, 32767, -32768, 32124, -32124, -1, 1, 3, 4], dtype=np.int16)
    assert list(codec.mulaw_encode(pcm)) == [0xFF, 0x80, 0x00, 0x80, 0x00, 0x7E, 0xFF, 0xFF, 0xFE]


def test_every_code_survives_decode_encode() -> None:
    codes = np.arange(256, dtype=np.uint8)
    back = np.frombuffer(codec.mulaw_encode(codec.mulaw_decode(codes.tobytes())), np.uint8)
    expected = codes.copy()
    expected[0x7F] = 0xFF  # negative zero decodes to 0, which encodes as positive zero
    assert back.tolist() == expected.tolist()


def test_encode_matches_reference_for_all_inputs() -> None:
    audioop = pytest.importorskip("audioop")  # the stdlib's C G.711, gone in Python 3.13
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert codec.mulaw_encode(pcm) == audioop.lin2ulaw(pcm.astype("<i2").tobytes(), 2)


def test_decode_error_within_half_a_step() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    back = codec.mulaw_decode(codec.mulaw_encode(pcm)).astype(np.int32)
    error = np.abs(back - pcm.astype(np.int32))
    magnitude = np.abs(pcm.astype(np.int32))
    # Steps grow with the segment: 8 in the first, 1024 in the last (16-bit units),
    # and full scale clips at 32124.
    assert error[magnitude < 120].max() <= 8
    assert error[magnitude < 32124].max() <= 512 + 4
    # Half a step is 1/32 of the smallest value of its segment, plus the bias of 33.
    assert (error / np.maximum(magnitude, 1))[magnitude > 1000].max() < 0.034


def test_encode_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="int16"):
        codec.mulaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="int16"):
        codec.pcm16_to_bytes(np.zeros(4, dtype=np.int32))


@pytest.mark.parametrize(
    ("encoding", "rate", "ms", "nbytes"),
    [
        (Encoding.PCM16, 16000, 10, 320),
        (Encoding.PCM16, 16000, 20, 640),
        (Encoding.PCM16, 8000, 10, 160),
        (Encoding.PCM16, 24000, 10, 480),
        (Encoding.PCM16, 48000, 20, 1920),
        (Encoding.MULAW, 8000, 10, 80),
        (Encoding.MULAW, 8000, 20, 160),
        (Encoding.MULAW, 16000, 10, 160),
        (Encoding.MULAW, 48000, 10, 480),
    ],
)
def test_frame_bytes(encoding: Encoding, rate: int, ms: int, nbytes: int) -> None:
    assert codec.frame_bytes(encoding, rate, ms) == nbytes
    assert AudioFormat(encoding, rate).frame_bytes(ms) == nbytes


def test_frame_size_errors() -> None:
    with pytest.raises(ValueError, match="positive"):
        codec.frame_samples(16000, 0)
    with pytest.raises(ValueError, match="whole number of samples"):
        codec.frame_samples(22050, 10)
    assert codec.frame_samples(8000, 1) == 8


def test_audio_format_validation() -> None:
    with pytest.raises(ValueError, match="sample_rate 44100"):
        AudioFormat(Encoding.PCM16, 44100)
    with pytest.raises(ValueError, match="encoding"):
        AudioFormat("pcm16", 16000)  # type: ignore[arg-type]
    fmt = AudioFormat(Encoding.MULAW, 8000)
    assert fmt.bytes_per_second == 8000
    assert fmt.duration_ms(160) == 20.0
    assert fmt.to_dict() == {"encoding": "mulaw", "sample_rate": 8000}


def test_pcm16_bytes_are_little_endian() -> None:
    samples = np.array([1, -2, 0x1234], dtype=np.int16)
    data = codec.encode(samples, Encoding.PCM16)
    assert data == b"\x01\x00\xfe\xff\x34\x12"
    assert codec.decode(data, Encoding.PCM16).tolist() == [1, -2, 0x1234]
    with pytest.raises(ValueError, match="even byte count"):
        codec.pcm16_from_bytes(b"\x00\x01\x02")


def test_silence() -> None:
    assert codec.silence(AudioFormat(Encoding.MULAW, 8000), 20) == b"\xff" * 160
    assert codec.silence(AudioFormat(Encoding.PCM16, 16000), 10) == bytes(320)
    assert codec.mulaw_decode(b"\xff" * 4).tolist() == [0, 0, 0, 0]


# ITU-T G.711 Table 1a (A-law): wire code -> decoded value in units of the 13-bit linear
# scale (full scale 4096); the 16-bit values are 8 times that. Codes on the wire have the
# even bits inverted, so the smallest positive step is 0xD5 and its negative 0x55.
G711_ALAW_DECODE_13BIT = {
    0xD5: 1,
    0xD4: 3,
    0xDA: 31,
    0xC5: 33,
    0xCA: 63,
    0xF5: 66,
    0xE5: 132,
    0x95: 264,
    0x85: 528,
    0xB5: 1056,
    0xA5: 2112,
    0xAA: 4032,
    0x55: -1,
    0x54: -3,
    0x2A: -4032,
}

# 13-bit magnitudes where a new segment starts, with the wire code (positive) of the last
# step below and of the first step at the threshold.
G711_ALAW_SEGMENTS = [
    (32, 0xDA, 0xC5),
    (64, 0xCA, 0xF5),
    (128, 0xFA, 0xE5),
    (256, 0xEA, 0x95),
    (512, 0x9A, 0x85),
    (1024, 0x8A, 0xB5),
    (2048, 0xBA, 0xA5),
]


def test_alaw_decode_matches_g711_table() -> None:
    decoded = codec.alaw_decode(bytes(G711_ALAW_DECODE_13BIT))
    assert decoded.dtype == np.int16
    assert decoded.tolist() == [8 * v for v in G711_ALAW_DECODE_13BIT.values()]


@pytest.mark.parametrize(("threshold", "below", "at"), G711_ALAW_SEGMENTS)
def test_alaw_encode_segment_thresholds(threshold: int, below: int, at: int) -> None:
    pcm = np.array([8 * threshold - 1, 8 * threshold], dtype=np.int16)
    assert codec.alaw_encode(pcm) == bytes([below, at])


def test_alaw_is_symmetric_in_ones_complement() -> None:
    # A-law codes -x-1 like x with the sign bit (0x80 before the inversion) cleared.
    pcm = np.arange(0, 32768, dtype=np.int32)
    positive = np.frombuffer(codec.alaw_encode(pcm.astype(np.int16)), np.uint8)
    negative = np.frombuffer(codec.alaw_encode((-pcm - 1).astype(np.int16)), np.uint8)
    assert (negative == (positive ^ 0x80)).all()


def test_alaw_extremes_and_linear_first_segment() -> None:
    pcm = np.array([0, 15, 16, 31, 32, 32767, -32768, -1, -16, -17], dtype=np.int16)
    assert list(codec.alaw_encode(pcm)) == [
        0xD5, 0xD5, 0xD4, 0xD4, 0xD7, 0xAA, 0x2A, 0x55, 0x55, 0x54,
    ]


def test_alaw_every_code_survives_decode_encode() -> None:
    codes = bytes(range(256))
    assert codec.alaw_encode(codec.alaw_decode(codes)) == codes


def test_alaw_matches_reference_for_all_inputs() -> None:
    audioop = pytest.importorskip("audioop")  # the stdlib's C G.711, gone in Python 3.13
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert codec.alaw_encode(pcm) == audioop.lin2alaw(pcm.astype("<i2").tobytes(), 2)
    codes = bytes(range(256))
    assert codec.alaw_decode(codes).astype("<i2").tobytes() == audioop.alaw2lin(codes, 2)


def test_alaw_decode_error_within_half_a_step() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    back = codec.alaw_decode(codec.alaw_encode(pcm)).astype(np.int32)
    error = np.abs(back - pcm.astype(np.int32))
    magnitude = np.abs(pcm.astype(np.int32))
    # Steps are 16 (16-bit units) in the first two segments, doubling up to 1024.
    assert error[magnitude < 512].max() <= 8
    assert error.max() <= 512


def test_alaw_format_sizes_codec_dispatch_and_silence() -> None:
    fmt = AudioFormat(Encoding.ALAW, 8000)
    assert fmt.frame_bytes(20) == 160
    assert fmt.bytes_per_second == 8000
    assert fmt.to_dict() == {"encoding": "alaw", "sample_rate": 8000}
    samples = np.array([0, 1000, -1000, 32767], dtype=np.int16)
    assert codec.encode(samples, Encoding.ALAW) == codec.alaw_encode(samples)
    assert codec.decode(b"\xd5\x2a", Encoding.ALAW).tolist() == [8, -32256]
    assert codec.silence(fmt, 10) == b"\xd5" * 80
    with pytest.raises(TypeError, match="int16"):
        codec.alaw_encode(np.zeros(4, dtype=np.float32))
