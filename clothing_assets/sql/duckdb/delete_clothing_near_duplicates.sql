DELETE FROM clothing_near_duplicates;
