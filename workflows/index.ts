export { migrateInfrastructure, progressQuery } from './migrate-infrastructure';
