"""Host-toolkit integration, installed as ``toucan_speakemb.adapters`` (never as a top-level ``adapters``
package: that name belongs to another PyPI project).

The IMS Toucan adapters (v2.2 FastSpeech2 / 704 and v3.x ToucanTTSInterface / 192, detected from the
interface and its checkpoint) are planned here; nothing in this package is usable yet.
"""
