"""Small controllers the window assembles: edits (undo), document (files), inspector (linked hover), actions (menus)."""
