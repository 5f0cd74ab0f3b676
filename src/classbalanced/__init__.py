"""classbalanced: Class-Balanced Loss based on the effective number of samples."""
