"""Everything of the plugin that imports Qt: the dock widgets and their Qt pieces.

The modules one level up are Qt-free (reader, writer, layers, results, presets, jobs, the
threshold cache) and run without napari; these only read inputs, call one of them and update
layers and controls.
"""
