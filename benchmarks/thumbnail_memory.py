"""What one thumbnail of the run report page costs the Airflow worker: fruits.report_page.draw (pixel limit read
from the header, a JPEG's draft) beside decoding every pixel first (the page before the limit), each in a fresh
process, on a 169-Mpx PNG of a few hundred KB and a 12-Mpx phone-sized JPEG.

    PYTHONPATH=plugins .venv/bin/python benchmarks/thumbnail_memory.py

Prints, per image and approach, whether a picture was drawn, the peak RSS it added above the interpreter's peak
after its imports (a decode smaller than that peak shows as ~0) and its seconds. Result quoted in
docs/operations.md ("The run report page").
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

# Run in a fresh interpreter per measurement: ru_maxrss is the process's peak.
MEASURE = """
import io, resource, sys, time
from PIL import ImageOps
from fruits import report_page, upload


def decode_all(content):
    with upload.pillow_image().open(io.BytesIO(content)) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((report_page.THUMB_PX, report_page.THUMB_PX))
        return image


content = open(sys.argv[2], "rb").read()
report_page.draw(b"")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
drawn = report_page.draw(content)[0] is not None if sys.argv[1] == "draw" else decode_all(content) is not None
seconds = time.perf_counter() - started
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(f"drawn={drawn} peak_rss_added={grown:.0f} MiB seconds={seconds:.2f}")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        png, jpeg = os.path.join(folder, "bomb.png"), os.path.join(folder, "12mp.jpg")
        Image.new("1", (13000, 13000)).save(png)
        noise = np.random.default_rng(0).integers(0, 256, size=(3000, 4000, 3), dtype=np.uint8)
        Image.fromarray(noise).save(jpeg, quality=90)
        for path, name in ((png, "169-Mpx PNG"), (jpeg, "12-Mpx JPEG")):
            for approach in ("decode_all", "draw"):
                result = subprocess.run(
                    [sys.executable, "-c", MEASURE, approach, path], capture_output=True, text=True, check=True
                )
                size = os.path.getsize(path) / 1e6
                print(f"{name} ({size:.2f} MB) {approach:>10}: {result.stdout.strip()}")


if __name__ == "__main__":
    main()
