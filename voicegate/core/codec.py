"""Wire audio formats: encodings, sample rates, frame sizes and G.711 mu-law and A-law.

The WebSocket protocols carry mono audio as 16-bit little-endian PCM or as G.711
mu-law or A-law, at one of a few fixed sample rates, in whole multiples of 10 ms. This
module is the single place that knows how many bytes such a frame takes and how the
G.711 laws map to linear PCM, so that the protocol parsers, the gateway, the stages and
the `talk` client agree.

The mu-law code is the ITU-T G.711 companding law as in the reference implementation
that most telephony stacks share: 16-bit input is reduced to the 14-bit range the
standard works in, biased by 33, and coded as sign, 3-bit segment and 4-bit step,
with all bits inverted on the wire. Decoding returns the segment's midpoint scaled back
to 16 bits, so decode(encode(x)) is within half a step of x and encode(decode(c)) == c
for every code except 0x7F (negative zero, which decodes to 0 and re-encodes as 0xFF).

The A-law code is G.711's other law (Europe, most of the world outside North America
and Japan): 16-bit input is reduced to the 13-bit range, coded as sign, 3-bit segment
and 4-bit step with a linear first segment, and every even bit is inverted on the wire
(XOR 0x55). A-law has no negative zero, so encode(decode(c)) == c for all 256 codes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

SUPPORTED_SAMPLE_RATES: Final[tuple[int, ...]] = (8000, 16000, 24000, 48000)
# Every binary audio message is a whole number of these.
FRAME_UNIT_MS: Final[int] = 10

_MULAW_BIAS: Final[int] = 0x84  # 33 in the 14-bit domain, as a 16-bit value
_MULAW_CLIP: Final[int] = 32635  # largest 16-bit magnitude that still fits once biased
MULAW_SILENCE: Final[int] = 0xFF  # the code for +0
_ALAW_XOR: Final[int] = 0x55  # the even bits G.711 inverts on the wire
ALAW_SILENCE: Final[int] = 0xD5  # the code for the smallest positive step (A-law has no 0)


class Encoding(enum.StrEnum):
    PCM16 = "pcm16"  # signed 16-bit little-endian
    MULAW = "mulaw"  # G.711 mu-law, one byte per sample
    ALAW = "alaw"  # G.711 A-law, one byte per sample

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self is Encoding.PCM16 else 1


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Mono audio as it travels on the WebSocket."""

    encoding: Encoding
    sample_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.encoding, Encoding):
            raise ValueError(f"encoding must be an Encoding, got {self.encoding!r}")
        if self.sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise ValueError(
                f"sample_rate {self.sample_rate!r} is not supported "
                f"(one of {', '.join(map(str, SUPPORTED_SAMPLE_RATES))})"
            )

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.encoding.bytes_per_sample

    def samples_per_frame(self, ms: int) -> int:
        return frame_samples(self.sample_rate, ms)

    def frame_bytes(self, ms: int) -> int:
        return frame_bytes(self.encoding, self.sample_rate, ms)

    def duration_ms(self, nbytes: int) -> float:
        """Playing time of `nbytes` of audio in this format."""
        return 1000.0 * nbytes / self.bytes_per_second

    def to_dict(self) -> dict[str, object]:
        return {"encoding": self.encoding.value, "sample_rate": self.sample_rate}


PCM16_16K: Final[AudioFormat] = AudioFormat(Encoding.PCM16, 16000)


def frame_samples(sample_rate: int, ms: int) -> int:
    """Samples in `ms` milliseconds; the duration must be a whole number of samples."""
    if ms <= 0:
        raise ValueError(f"frame duration must be positive, got {ms} ms")
    if (sample_rate * ms) % 1000:
        raise ValueError(f"{ms} ms at {sample_rate} Hz is not a whole number of samples")
    return sample_rate * ms // 1000


def frame_bytes(encoding: Encoding, sample_rate: int, ms: int) -> int:
    """Bytes of a mono frame of `ms` milliseconds in this encoding and rate."""
    return frame_samples(sample_rate, ms) * Encoding(encoding).bytes_per_sample


def _mulaw_encode_table() -> NDArray[np.uint8]:
    # Indexed by the 16-bit sample reinterpreted as uint16: a 64 KiB table turns
    # encoding into one gather, which beats the branchy per-sample arithmetic in numpy.
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    sign = pcm < 0
    # The standard drops the two low bits (14-bit domain) before taking the magnitude,
    # so -1 codes like -4, not like +0.
    magnitude = np.where(sign, -((pcm >> 2) << 2), pcm)
    magnitude = np.minimum(magnitude, _MULAW_CLIP) + _MULAW_BIAS
    # Segment = position of the highest set bit above bit 7 (0..7).
    segment = np.zeros_like(magnitude)
    for seg in range(1, 8):
        segment[magnitude >= 0x80 << seg] = seg
    step = (magnitude >> (segment + 3)) & 0x0F
    code = (segment << 4) | step
    # Bits are inverted on the wire, so after inversion a set top bit means positive.
    code = np.where(sign, code | 0x80, code)
    table = (~code & 0xFF).astype(np.uint8)
    # Reorder so that index = sample as uint16 (0..32767 positive, 32768.. negative).
    return np.concatenate([table[32768:], table[:32768]])


def _mulaw_decode_table() -> NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    magnitude = (((step << 3) + _MULAW_BIAS) << segment) - _MULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_encode_table() -> NDArray[np.uint8]:
    # Same indexing as the mu-law table: the sample as uint16.
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # the 13-bit domain
    positive = pcm >= 0
    # One's complement for negatives: -1 codes like 0 with the sign cleared, so the
    # two smallest steps around zero are symmetric.
    magnitude = np.where(positive, pcm, -pcm - 1)
    # Segment 0 and 1 share the step size (the linear first chord); above, segment n
    # starts at 16 << n.
    segment = np.zeros_like(magnitude)
    for seg in range(1, 8):
        segment[magnitude >= 16 << seg] = seg
    step = np.where(segment < 2, magnitude >> 1, magnitude >> segment) & 0x0F
    code = (segment << 4) | step
    code = np.where(positive, code | 0x80, code) ^ _ALAW_XOR
    table = code.astype(np.uint8)
    return np.concatenate([table[32768:], table[:32768]])


def _alaw_decode_table() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ _ALAW_XOR
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    # The decoded value is the middle of the step, in the 16-bit domain (x 8).
    linear = (step << 4) + 8
    linear = np.where(segment > 0, (linear + 0x100) << np.maximum(segment - 1, 0), linear)
    return np.where(code & 0x80, linear, -linear).astype(np.int16)


_ENCODE: Final[NDArray[np.uint8]] = _mulaw_encode_table()
_DECODE: Final[NDArray[np.int16]] = _mulaw_decode_table()
_ALAW_ENCODE: Final[NDArray[np.uint8]] = _alaw_encode_table()
_ALAW_DECODE: Final[NDArray[np.int16]] = _alaw_decode_table()


def _g711_encode(table: NDArray[np.uint8], samples: NDArray[np.int16], law: str) -> bytes:
    if samples.dtype != np.int16:
        raise TypeError(f"{law} encoding needs int16 samples, got {samples.dtype}")
    return table[samples.reshape(-1).view(np.uint16)].tobytes()


def mulaw_encode(samples: NDArray[np.int16]) -> bytes:
    """G.711 mu-law bytes of 16-bit linear samples."""
    return _g711_encode(_ENCODE, samples, "mu-law")


def mulaw_decode(data: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    """16-bit linear samples of G.711 mu-law bytes."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: NDArray[np.int16]) -> bytes:
    """G.711 A-law bytes of 16-bit linear samples."""
    return _g711_encode(_ALAW_ENCODE, samples, "A-law")


def alaw_decode(data: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    """16-bit linear samples of G.711 A-law bytes."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_from_bytes(data: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    """Samples of little-endian 16-bit PCM bytes (a copy in native byte order)."""
    if len(data) % 2:
        raise ValueError(f"pcm16 audio must have an even byte count, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def pcm16_to_bytes(samples: NDArray[np.int16]) -> bytes:
    if samples.dtype != np.int16:
        raise TypeError(f"pcm16 encoding needs int16 samples, got {samples.dtype}")
    return samples.reshape(-1).astype("<i2", copy=False).tobytes()


def encode(samples: NDArray[np.int16], encoding: Encoding) -> bytes:
    """Wire bytes of 16-bit samples in `encoding`."""
    if encoding is Encoding.MULAW:
        return mulaw_encode(samples)
    if encoding is Encoding.ALAW:
        return alaw_encode(samples)
    return pcm16_to_bytes(samples)


def decode(data: bytes | bytearray | memoryview, encoding: Encoding) -> NDArray[np.int16]:
    """16-bit samples of wire bytes in `encoding`."""
    if encoding is Encoding.MULAW:
        return mulaw_decode(data)
    if encoding is Encoding.ALAW:
        return alaw_decode(data)
    return pcm16_from_bytes(data)


def silence(fmt: AudioFormat, ms: int) -> bytes:
    """`ms` milliseconds of digital silence in `fmt`."""
    n = fmt.samples_per_frame(ms)
    if fmt.encoding is Encoding.MULAW:
        return bytes([MULAW_SILENCE]) * n
    if fmt.encoding is Encoding.ALAW:
        return bytes([ALAW_SILENCE]) * n
    return bytes(2 * n)
