"""The canvas: a QGraphicsScene that mirrors the document's graph, its items, and the view."""
