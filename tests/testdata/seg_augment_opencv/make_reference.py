"""Writes reference.npz: OpenCV's resizing and HSV conversions, as mmcv calls them.

Needs opencv-python-headless (5.1.0 made the committed file) and numpy:
    python make_reference.py
The inputs are stored beside the outputs, so the test needs no OpenCV.
"""
import cv2
import numpy as np

SIZES = [(74, 106), (20, 29), (100, 31), (37, 53), (18, 26), (131, 170)]  # (h, w)


def main():
  rng = np.random.default_rng(0)
  out = {}
  image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  image2x = rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)  # an exact 2x shrink
  label = rng.integers(0, 150, (37, 53), dtype=np.uint8)
  label[rng.random(label.shape) < 0.2] = 255
  out['image'], out['image2x'], out['label'] = image, image2x, label
  for h, w in SIZES:
    out[f'bilinear_{h}x{w}'] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    out[f'nearest_{h}x{w}'] = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
  out['bilinear2x_18x26'] = cv2.resize(image2x, (26, 18), interpolation=cv2.INTER_LINEAR)
  rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  rgb[0, :, :] = rgb[0, :, :1]  # grey pixels: S = 0
  out['rgb'] = rgb
  out['rgb_to_hsv'] = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
  hsv = np.stack([rng.integers(0, 180, (64, 64)), rng.integers(0, 256, (64, 64)),
                  rng.integers(0, 256, (64, 64))], -1).astype(np.uint8)
  hsv[0, :, 1] = 0
  out['hsv'] = hsv
  out['hsv_to_rgb'] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
  out['opencv_version'] = np.array(cv2.__version__)
  np.savez_compressed('reference.npz', **out)


if __name__ == '__main__':
  main()
