import pytest
from test_data_download import Server


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving ``server.files`` ({path: bytes}); shut down after the test."""
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
