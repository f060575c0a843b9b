"""nfvha: VM high availability from the inside out.

This top-level module must stay importable on Python 3.8 with only the
standard library: the guest agent (nfvha.guest, nfvha.protocol) ships in VM
images.
"""

__version__ = "0.1.0"
