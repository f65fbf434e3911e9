"""robomimic / robosuite HDF5 demonstration files as an hpt-kit importer (``hpt-kit import robomimic``)."""
