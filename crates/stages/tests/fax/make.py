#!/usr/bin/env python3
"""Writes the fax TIFF fixtures of src/stages/fax.rs with third-party encoders: Pillow (libtiff) draws
a 1728-pixel-wide page, the width of a fax line, and codes it as CCITT Group 3 (one-dimensional),
Modified Huffman and Group 4; libtiff's tiffcp codes the same page as the other Group 3 variants.

Run in this folder: pip install pillow; apt-get install libtiff-tools; python3 make.py
"""
import subprocess

from PIL import Image, ImageDraw, ImageFont

font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 40)
img = Image.new("1", (1728, 600), 1)
d = ImageDraw.Draw(img)
d.text((60, 80), "Hemograma completo", font=font, fill=0)
d.text((60, 200), "Glicemia de jejum 92 mg/dL", font=font, fill=0)
d.text((60, 320), "Paciente: Maria Souza", font=font, fill=0)
img.save("fax-g3-1d.tif", compression="group3")
img.save("fax-g4.tif", compression="group4")
img.save("fax-mh.tif", compression="tiff_ccitt")
img.save("raw.tif")
for args in (
    ["-c", "g3:2d", "raw.tif", "fax-g3-2d.tif"],
    ["-c", "g3:1d:fill", "raw.tif", "fax-g3-1d-fill.tif"],
    ["-c", "g3:1d", "-f", "lsb2msb", "raw.tif", "fax-g3-1d-lsb.tif"],
    ["-c", "g3:1d", "-r", "64", "raw.tif", "fax-g3-1d-strips.tif"],
    ["-c", "g3:1d", "raw.tif", "raw.tif", "fax-g3-1d-2p.tif"],
):
    subprocess.run(["tiffcp", *args], check=True)
subprocess.run(["rm", "raw.tif"], check=True)
