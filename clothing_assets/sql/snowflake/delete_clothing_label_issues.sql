DELETE FROM clothing_label_issues;
