"""Heiti's PySide6 desktop editor. Imports the engine; the engine never imports this package.

Layout (one job per module):
    document.py        GraphDocument: the engine's Graph + Qt signals, undo stack, validation,
                       connection rules; the model is the truth
    commands.py        QUndoCommands (add/remove items, move, set params); every edit is one
    canvas/            scene (mirrors the document, runs the wire drag), node/port/wire items,
                       view (zoom at cursor, pan, fit, rubber band, palette drops), style
    palette.py         kinds by category, search, drag or double-click to add
    quickadd.py        Tab / double-click popup with fuzzy search (fuzzy.py)
    inspector*.py      param editors generated from each kind's Params schema
    bridge.py          Executor on a QThread; engine events -> queued Qt signals
    run_controller.py  Run / Stop, routing bridge signals to canvas, log, charts, results
    docks/             log, live charts (pyqtgraph), comparison table + report
    file_ops.py        open/save/recent/examples/autosave; recovery.py: crash recovery files
    mainwindow.py      the window, menus, toolbar, clipboard; main.py: `heiti edit`
"""
