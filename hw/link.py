"""The host link's frame format, in one place for the bridge (hardware) and
the host (:mod:`trilut.host.protocol`).

A frame, byte by byte::

    SYNC  type  seq  len_lo len_hi  payload[len]  crc_hi crc_lo

* ``SYNC`` = 0xA5 starts every frame (the device hunts for it).
* ``type``: a :class:`FrameType`; a reply carries the request's type with
  :data:`REPLY` set, a negative acknowledgement is :attr:`FrameType.NAK`.
* ``seq``: chosen by the host, echoed in the reply. The device keeps the
  last executed request's (seq, type, CRC) and its reply: a request equal in
  all three is a retry and gets the stored reply again without being
  executed a second time.
* ``len``: payload bytes, little-endian, at most :data:`MAX_PAYLOAD`.
* CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, no reflection, no
  final xor) over ``type`` .. the last payload byte, sent most significant
  byte first, so that the CRC run over everything after SYNC, CRC included,
  is 0 (the check the hardware makes).

Requests and their reply payloads (multi-byte fields little-endian;
every reply payload starts with a :class:`Status` byte):

==================  =========================================  ==========================
request             payload                                    reply payload
==================  =========================================  ==========================
``REG_WRITE``       addr u32, then n >= 1 words u32             status
                    (written to addr, addr + 4, ...)
``REG_READ``        addr u32, count u16 (1 .. :func:`max_read_words`)   status, count words u32
``STREAM_WRITE``    stream u8, beats u16, beats x record        status, free u16 (beats the
                                                                stream's buffer can take)
``STREAM_READ``     stream u8 (| :data:`STREAM_WAIT`),          status, up to max_beats records
                    max_beats u16
``MEM_WRITE``       addr u32, then n bytes (n even, >= 2)       status
``MEM_READ``        addr u32, count u16 (even,                  status, count bytes
                    2 .. :func:`max_mem_read_bytes`)
``FEED``            flags u8 (:data:`FEED_START`,               status
                    :data:`FEED_ABORT`), then n >= 0 frames
                    of addr u32, bytes u32
==================  =========================================  ==========================

A *record* is one AXI4-Stream transfer of stream i: its ``tdata`` as
``stream_bytes[i]`` bytes (byte 0 = ``tdata[7:0]``) then one flags byte
(bit 0 = ``tlast``). Input streams are numbered in the accelerator's
signature order over its ``s_axis*`` members, output streams over its
``m_axis*`` members (:func:`trilut.hw.bridge.stream_ports`).

MEM_WRITE / MEM_READ reach the external memory behind a bridge built with
one (:class:`trilut.hw.bridge.ByteAccelerator` ``sdram=...``; a bridge
without memory answers :attr:`Status.BAD_TYPE`). ``addr`` is a byte
address; address and length must be multiples of :data:`MEM_ALIGN` (the
memory's word; the host merges unaligned edges itself) and the bytes must
lie inside the memory, else the reply is :attr:`Status.BAD_ADDRESS`
(nothing written). A MEM_READ issued after a MEM_WRITE sees its data. If
the memory's initialisation failed the reply is :attr:`Status.MEM_ERROR`.

FEED (a bridge with memory only) queues frames of LINEAR weights that the
bridge's :class:`~trilut.hw.weightfeed.WeightFeeder` reads from the memory
and streams into ``s_axis_wgt``, in order, between the host's own
``s_axis_wgt`` frames (never inside one); a frame is ``bytes`` from byte
address ``addr``. With :data:`FEED_ABORT` the bridge first drops every
queued frame and the words in flight (use it with the accelerator stopped);
with :data:`FEED_START` it then writes ``CTRL.start``, saving a REG_WRITE
per run. The request is checked whole before anything is queued: an
unaligned address or a span outside the memory is BAD_ADDRESS, a length
that is 0 or not a multiple of the stream's transfer is BAD_LENGTH, more
frames than the queue has room for is FULL (nothing queued). While frames
are queued or being read, MEM_WRITE and MEM_READ are answered
:attr:`Status.BUSY` (the port is the feeder's; a write could change weights
being read).

A STREAM_WRITE is taken whole or not at all: with fewer than ``beats`` free
places in the stream's buffer the reply is :attr:`Status.FULL` (nothing
written; ``free`` says how much room there is, and a STREAM_WRITE of 0 beats
asks just that). A STREAM_READ returns what the output buffer holds, up to
``max_beats`` (possibly none). With :data:`STREAM_WAIT` set in its stream
byte, the bridge first waits for the output: until the buffer holds
``max_beats`` records, or holds some and no record has arrived for
:data:`READ_GAP` cycles, or (empty) for the bridge's ``read_wait`` cycles;
one request then replaces the empty polls a host would send while the
accelerator computes. A frame with a bad CRC, a length beyond
:data:`MAX_PAYLOAD` or a gap of more than the bridge's timeout between two
of its bytes is discarded and answered with a NAK whose payload is the
:class:`Status` (BAD_CRC, BAD_LENGTH or TRUNCATED); the host retries.
"""
import binascii

from amaranth.hdl import Cat, Const, Value
from amaranth.lib import enum

__all__ = ["SYNC", "REPLY", "MAX_PAYLOAD", "HEADER_BYTES", "CRC_BYTES", "MEM_ALIGN", "FrameType",
           "Status", "crc16", "crc16_byte", "record_bytes", "max_read_words", "max_record_beats",
           "max_mem_write_bytes", "max_mem_read_bytes", "FEED_START", "FEED_ABORT",
           "STREAM_WAIT", "READ_GAP",
           "FEED_FRAME_BYTES", "max_feed_frames"]

SYNC = 0xA5
REPLY = 0x80
#: Largest payload of any frame (request or reply); the bridge's buffers hold one.
MAX_PAYLOAD = 1024
HEADER_BYTES = 5      # SYNC, type, seq, len_lo, len_hi
CRC_BYTES = 2
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021
#: MEM_WRITE / MEM_READ address and length granule: the external memory's
#: word (the ULX3S SDRAM is 16 bits wide and written whole words at a time).
MEM_ALIGN = 2
#: STREAM_READ: set in the stream byte to wait for the output (see above).
STREAM_WAIT = 0x80
#: STREAM_READ with STREAM_WAIT: cycles without a new record that end the wait.
READ_GAP = 256
#: FEED flags: write CTRL.start once the frames are queued.
FEED_START = 0x01
#: FEED flags: drop all queued frames (and words in flight) first.
FEED_ABORT = 0x02
#: FEED: bytes per frame descriptor (addr u32, bytes u32).
FEED_FRAME_BYTES = 8


class FrameType(enum.IntEnum, shape=8):
    REG_WRITE = 0x01
    REG_READ = 0x02
    STREAM_WRITE = 0x03
    STREAM_READ = 0x04
    MEM_WRITE = 0x05
    MEM_READ = 0x06
    FEED = 0x07
    NAK = 0x7F


class Status(enum.IntEnum, shape=8):
    """First byte of every reply payload, and the payload of a NAK."""
    OK = 0
    BAD_TYPE = 1      #: unknown request type
    BAD_LENGTH = 2    #: payload length does not match the request (or > MAX_PAYLOAD)
    BAD_STREAM = 3    #: no such stream
    FULL = 4          #: STREAM_WRITE: not enough room, nothing written
    BAD_CRC = 5       #: NAK: CRC mismatch
    TRUNCATED = 6     #: NAK: inter-byte timeout inside a frame
    BAD_ADDRESS = 7   #: MEM_*: unaligned, or outside the memory
    MEM_ERROR = 8     #: MEM_* / FEED: the memory failed to initialise
    BUSY = 9          #: MEM_*: the weight feeder is using the memory


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of ``data`` (bytes), the reference for the hardware's
    :func:`crc16_byte`."""
    return binascii.crc_hqx(bytes(data), crc)


def crc16_byte(crc, byte):
    """Amaranth expression: ``crc`` (16 bits) updated with ``byte`` (8 bits),
    MSB first, one combinational step (the same polynomial as :func:`crc16`)."""
    crc = Value.cast(crc)
    bits = [crc[i] for i in range(16)]
    for i in reversed(range(8)):
        fb = bits[15] ^ Value.cast(byte)[i]
        shifted = [Const(0, 1)] + bits[:15]
        bits = [shifted[j] ^ fb if (CRC_POLY >> j) & 1 else shifted[j] for j in range(16)]
    return Cat(*bits)


def record_bytes(stream_bytes):
    """Bytes of one stream record: the transfer's data plus the flags byte."""
    return stream_bytes + 1


def max_record_beats(stream_bytes):
    """Most records one STREAM_WRITE request or STREAM_READ reply can carry."""
    return (MAX_PAYLOAD - 3) // record_bytes(stream_bytes)


def max_read_words():
    """Most words one REG_READ reply can carry."""
    return (MAX_PAYLOAD - 1) // 4


def max_mem_write_bytes():
    """Most data bytes one MEM_WRITE request can carry."""
    return (MAX_PAYLOAD - 4) // MEM_ALIGN * MEM_ALIGN


def max_mem_read_bytes():
    """Most data bytes one MEM_READ reply can carry."""
    return (MAX_PAYLOAD - 1) // MEM_ALIGN * MEM_ALIGN


def max_feed_frames():
    """Most frame descriptors one FEED request can carry."""
    return (MAX_PAYLOAD - 1) // FEED_FRAME_BYTES
