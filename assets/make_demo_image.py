# Draws assets/demo_landscape.png, the bundled demo input: a synthetic 384x256 scene drawn with
# Pillow (sky, sun, clouds, hills, lake, boat). Run from the repository root to regenerate it.
import math
from PIL import Image, ImageDraw, ImageFilter

W, H = 384, 256
img = Image.new("RGB", (W, H))
d = ImageDraw.Draw(img)
for y in range(H):
    t = y / 150
    top, bottom = (38, 84, 160), (250, 190, 120)
    c = tuple(int(a + (b - a) * min(t, 1.0)) for a, b in zip(top, bottom))
    d.line([(0, y), (W, y)], fill=c)
d.ellipse([250, 60, 300, 110], fill=(255, 226, 140))
for i, (base, amp, col) in enumerate([(150, 28, (88, 108, 140)), (170, 22, (60, 110, 80)), (185, 14, (40, 88, 60))]):
    pts = [(0, H)]
    for x in range(0, W + 1, 8):
        pts.append((x, base - amp * math.sin(x / (45 + 15 * i) + i) - 0.5 * amp * math.sin(x / 17 + 2 * i)))
    pts.append((W, H))
    d.polygon(pts, fill=col)
d.rectangle([0, 195, W, H], fill=(52, 96, 150))
for k in range(14):
    y = 200 + 4 * k
    d.line([(20 + 23 * k % 300, y), (70 + 23 * k % 300, y)], fill=(120, 160, 205), width=1)
d.polygon([(150, 208), (210, 208), (200, 218), (160, 218)], fill=(120, 60, 30))
d.line([(180, 208), (180, 172)], fill=(70, 40, 20), width=2)
d.polygon([(182, 174), (182, 205), (206, 205)], fill=(245, 240, 230))
for cx, cy in [(70, 50), (150, 35), (330, 40)]:
    for dx, r in [(-14, 10), (0, 14), (14, 10)]:
        d.ellipse([cx + dx - r, cy - r, cx + dx + r, cy + r], fill=(245, 245, 250))
img = img.filter(ImageFilter.SMOOTH)
img = img.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")
img.save("assets/demo_landscape.png", optimize=True)
