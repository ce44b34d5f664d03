"""Online learning: buffered mini-batch updates of the champion, checkpoints, publication or rollback."""
