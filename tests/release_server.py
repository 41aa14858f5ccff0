"""A release page on 127.0.0.1 for the pretrained-weights tests: a real HTTP server in a thread.

It serves the files of one folder with HTTP Range support, records each request's Range
header, answers 404 for files it does not have, and can be told to cut the next transfer
short (the connection closes after `cut_next_after` bytes of a full-length response).
"""
import http.server
import os
import re
import threading
from typing import List, Optional


class ReleaseServer:
  """`with ReleaseServer(folder) as server:` serves `folder` at `server.url`."""

  def __init__(self, folder: str):
    self.folder = folder
    self.ranges: List[Optional[str]] = []  # the Range header of every request, in order
    self.cut_next_after: Optional[int] = None
    self._httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler(self))
    self.url = f'http://127.0.0.1:{self._httpd.server_address[1]}/'
    self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

  def __enter__(self) -> 'ReleaseServer':
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def stop(self) -> None:
    if self._thread.is_alive():
      self._httpd.shutdown()
      self._thread.join()
    self._httpd.server_close()


def _handler(server: ReleaseServer):

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      requested = self.headers.get('Range')
      server.ranges.append(requested)
      path = os.path.join(server.folder, os.path.basename(self.path))
      if not os.path.isfile(path):
        self.send_error(404, 'Not Found')
        return
      with open(path, 'rb') as f:
        body = f.read()
      start = int(re.fullmatch(r'bytes=(\d+)-', requested).group(1)) if requested else 0
      self.send_response(206 if requested else 200)
      if requested:
        self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
      self.send_header('Content-Length', str(len(body) - start))
      self.end_headers()
      cut, server.cut_next_after = server.cut_next_after, None
      self.wfile.write(body[start:] if cut is None else body[start:start + cut])
      if cut is not None:
        self.close_connection = True

    def log_message(self, *args):  # keep the test output quiet
      del args

  return Handler
