#!/usr/bin/env python3
"""Writes owner-password PDFs encrypted with RC4 40-bit (revision 2) and no /ID in the trailer, as
some older writers made them: the user password is empty, so any reader opens them, and the
permissions (P) say what it may do (one file has a user password, for the refusal). The encryption is the PDF 1.3 Standard security handler
(ISO 32000-1, 7.6.3, algorithms 2-4) in a few lines, since current writers (qpdf, pikepdf) always
write an /ID; qpdf --check and poppler's pdftotext read the results.

Run in this folder: python3 make.py
"""
import hashlib

PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def rc4(key, data):
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def pad(pw):
    return (pw + PAD)[:32]


def write(name, permissions, owner=b"master", user=b""):
    o = rc4(hashlib.md5(pad(owner)).digest()[:5], pad(user))
    p = permissions.to_bytes(4, "little", signed=True)
    key = hashlib.md5(pad(user) + o + p).digest()[:5]  # no /ID: its first element is empty
    u = rc4(key, PAD)

    def seal(num, data):
        k = hashlib.md5(key + num.to_bytes(3, "little") + b"\0\0").digest()[:10]
        return rc4(k, data)

    page1 = b"BT /F1 18 Tf 72 720 Td (Hemograma completo) Tj 0 -30 Td (Glicemia de jejum 92 mg/dL) Tj ET"
    page2 = b"BT /F1 18 Tf 72 720 Td (Paciente Maria Souza) Tj 0 -30 Td (Laudo liberado) Tj ET"
    objs = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        4: None,
        5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        6: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> /Contents 7 0 R >>",
        7: None,
        8: b"<< /Title <" + seal(8, b"Resultado de exame").hex().encode() + b"> >>",
        9: b"<< /Filter /Standard /V 1 /R 2 /Length 40 /O <" + o.hex().encode() + b"> /U <"
        + u.hex().encode() + b"> /P " + str(permissions).encode() + b" >>",
    }
    for num, text in ((4, page1), (7, page2)):
        data = seal(num, text)
        objs[num] = b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"
    out = bytearray(b"%PDF-1.3\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num in sorted(objs):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 8 0 R /Encrypt 9 0 R >>\n" % (len(objs) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    with open(name, "wb") as f:
        f.write(out)


# Print and copy allowed, changes not (bits 3 and 5 set; 4 and 6 clear).
write("rc4-40-ownerpw-noid.pdf", -44)
# Nothing allowed: bits 3-6 clear.
write("rc4-40-ownerpw-noid-locked.pdf", -64)
# A user password ("view"): no reader opens it without one.
write("rc4-40-userpw-noid.pdf", -44, user=b"view")
