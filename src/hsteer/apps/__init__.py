"""Applications of the library on the bundled world: the demo, the method comparison, the world model's training and quality bar, and the recipes they share."""
