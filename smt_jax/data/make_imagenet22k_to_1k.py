"""Writes imagenet22k_to_1k.txt: the ImageNet-22K head row of each ImageNet-1K class.

    pip install --no-deps timm   # only its synset lists are read; torch is not needed
    python smt_jax/data/make_imagenet22k_to_1k.py

Line i (0-based) of the output is the row of the official 21,841-class SMT head that
holds ImageNet-1K class i (the sorted 1K synsets). The official fine-tuning code keeps
those rows when it starts a 1K model from the 22K weights.

The official 22K labels number the 21,843 sorted synsets of the full ImageNet-22K list
(timm's `imagenet21k_goog_synsets.txt`), of which two have no images: their labels 9205
and 15027 are given to the last two synsets, so the head has 21,841 rows. Every 1K class
lies below label 21841, so its row is its position in that list. One 1K class, the teddy
bear (n04399382), is not among the 22K synsets: like the official mapping, it takes the
22K synset that has the 1K class's first lemma, 'teddy', among its own (n03013580).

Checked once against the official `data/map22kto1k.txt` (github.com/AFeng-x/SMT, commit
11e954d) with timm 1.0.31: all 1,000 rows equal. Not the same as the sorted 21,841-synset
order of an ImageFolder tree (timm's `imagenet22k_synsets.txt`): from class 718 on, the
two orders differ by one or two rows.
"""
import importlib.util
import os

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imagenet22k_to_1k.txt')
HEAD_CLASSES = 21841


def _timm_info_dir() -> str:
  spec = importlib.util.find_spec('timm')
  if spec is None:
    raise SystemExit('timm is not installed: pip install --no-deps timm')
  return os.path.join(os.path.dirname(spec.origin), 'data', '_info')


def _lines(info_dir: str, name: str):
  with open(os.path.join(info_dir, name)) as f:
    return [line.rstrip('\n') for line in f if line.strip()]


def head_rows_of_1k(info_dir: str):
  full_22k = _lines(info_dir, 'imagenet21k_goog_synsets.txt')
  in_1k = _lines(info_dir, 'imagenet_synsets.txt')
  lemmas = {}
  for line in _lines(info_dir, 'imagenet_synset_to_lemma.txt'):
    synset, names = line.split('\t')
    lemmas[synset] = [n.strip() for n in names.split(',')]
  assert len(full_22k) == HEAD_CLASSES + 2 and full_22k == sorted(full_22k)
  assert len(in_1k) == 1000 and in_1k == sorted(in_1k)
  position = {synset: i for i, synset in enumerate(full_22k)}
  rows = []
  for synset in in_1k:
    if synset not in position:
      matches = [s for s in full_22k if lemmas[synset][0] in lemmas[s]]
      assert len(matches) == 1, (synset, matches)
      synset = matches[0]
    rows.append(position[synset])
  empty = {position['n03931044'], position['n09859684']}  # the two synsets without images
  assert max(rows) < HEAD_CLASSES and not empty & set(rows)
  return rows


def main():
  rows = head_rows_of_1k(_timm_info_dir())
  with open(OUTPUT, 'w') as f:
    f.write(''.join(f'{row}\n' for row in rows))
  print(f'wrote {len(rows)} rows to {OUTPUT}')


if __name__ == '__main__':
  main()
