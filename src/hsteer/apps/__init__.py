"""Applications of the library on the bundled world: the demo, the method comparison, the site and group scans, and the recipes they share."""
