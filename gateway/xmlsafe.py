"""The one XML parser (codecs and signatures): no DTD, no entities, no network, no huge trees, size cap first."""

from __future__ import annotations

from lxml import etree

MAX_XML_BYTES = 1_048_576


class UnsafeXml(ValueError):
    """Bytes refused before or while parsing: too large, a DOCTYPE, or not well-formed."""


_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=False,
    remove_pis=True,
)


def parse_xml(data: bytes, *, max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse untrusted XML. Refuses any DOCTYPE outright: SOAP forbids them and they carry XXE and bombs."""
    if len(data) > max_bytes:
        raise UnsafeXml(f"XML document of {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {exc}") from exc
    if root.getroottree().docinfo.doctype:
        raise UnsafeXml("a DOCTYPE is not allowed")
    return root
