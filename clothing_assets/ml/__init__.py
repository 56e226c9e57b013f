"""Plain functions for images, training and scoring; the assets only wire and log them."""
