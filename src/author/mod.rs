//! author (to be written)
