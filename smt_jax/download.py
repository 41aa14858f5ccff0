"""Downloads one file over HTTP(S) into place: resumable, atomic, with a progress bar.

Bytes go to `PATH.part` first; an interrupted transfer leaves that file, and the next
call asks the server for the rest (an HTTP Range request) instead of starting over. Only
a complete transfer is renamed to PATH, so PATH never holds a partial file.
"""
import http.client
import os
import urllib.error
import urllib.request

import tqdm

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class DownloadError(OSError):
  """The file could not be fetched; the message says from where and what to do instead."""


def part_path(path: str) -> str:
  """Where the bytes of an unfinished download of `path` are kept."""
  return path + '.part'


def download(url: str, path: str, progress: bool = True) -> str:
  """Fetches `url` into `path` (resuming `path`.part if present) and returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  part = part_path(path)
  offset = os.path.getsize(part) if os.path.exists(part) else 0
  request = urllib.request.Request(url, headers={'Range': f'bytes={offset}-'} if offset else {})
  try:
    response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)  # pylint: disable=R1732
  except urllib.error.HTTPError as e:
    if e.code == 416 and offset:  # the part file already holds every byte
      os.replace(part, path)
      return path
    raise DownloadError(f'{url} answered HTTP {e.code} {e.reason}.') from None
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, 'reason', e)
    raise DownloadError(f'Could not reach {url}: {reason}.') from None
  with response:
    if offset and response.status != 206:  # the server ignored the Range: start over
      offset = 0
    length = response.headers.get('Content-Length')
    total = offset + int(length) if length is not None else None
    with open(part, 'ab' if offset else 'wb') as f, tqdm.tqdm(
        total=total, initial=offset, unit='B', unit_scale=True, unit_divisor=1024,
        desc=os.path.basename(path), disable=not progress) as bar:
      try:
        for chunk in iter(lambda: response.read(_CHUNK), b''):
          f.write(chunk)
          bar.update(len(chunk))
      except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f'The transfer from {url} broke off after {f.tell():,} bytes '
                            f'({e}); run again to resume it.') from None
      received = f.tell()
  if total is not None and received < total:
    raise DownloadError(f'The transfer from {url} broke off after {received:,} of {total:,} '
                        'bytes; run again to resume it.')
  os.replace(part, path)
  return path

