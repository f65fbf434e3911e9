"""LeRobot datasets (v2.x and v3.0) as an hpt-kit importer."""
