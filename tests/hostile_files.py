"""Hostile files for the upload tests (tests/app/test_uploads.py, tests/app/test_api.py)."""
import struct
import zlib


def png_bomb(width, height):
    """A real PNG whose pixel data inflates to width x height x 3 bytes of zeros (gigabytes) from a
    few MB: one compressed megabyte, repeated (a full flush makes each copy stand alone)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    mb = b"\0" * 2**20
    comp = zlib.compressobj(9)
    first = comp.compress(mb) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(mb) + comp.flush(zlib.Z_FULL_FLUSH)
    copies = (width * 3 + 1) * height // 2**20
    idat = first + again * (copies - 1) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
