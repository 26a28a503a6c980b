#include "runtime/informer.h"

#include "core/thread_name.h"
#include "kube/api_error.h"

namespace perimeter::runtime {

using nlohmann::json;

void strip_managed_fields(json& object) {
  if (object.contains("metadata") && object["metadata"].is_object())
    object["metadata"].erase("managedFields");
}

Informer::Informer(kube::ResourceClient& client, InformerOptions options, RuntimeMetrics& metrics,
                   Logger logger, RandomSource& random, Clock& clock)
    : client_(client),
      options_(std::move(options)),
      metrics_(metrics),
      logger_(std::move(logger)),
      clock_(clock),
      backoff_(options_.backoff, random),
      store_(options_.store ? options_.store : std::make_shared<Store>()) {
  // Looked up once: a label lookup per event would cost more than the event itself.
  for (auto type : {kube::WatchEventType::kAdded, kube::WatchEventType::kModified,
                    kube::WatchEventType::kDeleted, kube::WatchEventType::kBookmark,
                    kube::WatchEventType::kError}) {
    event_counters_[static_cast<size_t>(type)] = &metrics_.watch_events_total.Add(
        {{"resource", client_.type().describe()}, {"type", kube::to_string(type)}});
  }
}

Informer::~Informer() {
  stop();
}

void Informer::add_handlers(EventHandlers handlers) {
  handlers_.push_back(std::move(handlers));
}

void Informer::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void Informer::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (active_watch_ != nullptr) active_watch_->cancel();
  }
  wake_.notify_all();
  synced_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Informer::wait_for_sync(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return synced_cv_.wait_for(lock, timeout, [&] { return synced_.load() || stopping_.load(); }) &&
         synced_.load();
}

std::string Informer::resource_version() const {
  std::lock_guard lock(mutex_);
  return resource_version_;
}

bool Informer::sleep_for(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, delay, [&] { return stopping_.load(); });
  return !stopping_;
}

void Informer::count_restart(const std::string& reason) {
  metrics_.watch_restarts_total.Add({{"resource", client_.type().describe()}, {"reason", reason}})
      .Increment();
}

void Informer::dispatch(const Store::Change& change) {
  for (const auto& handlers : handlers_) {
    // One handler's bug must neither end this thread (and with it the process) nor keep the
    // other handlers from the event: logged, counted, and the next handler runs.
    try {
      if (change.old_object == nullptr) {
        if (handlers.on_add) handlers.on_add(change.new_object);
      } else if (change.new_object == nullptr) {
        if (handlers.on_delete) handlers.on_delete(change.old_object);
      } else if (handlers.on_update) {
        handlers.on_update(change.old_object, change.new_object);
      }
    } catch (const std::exception& e) {
      metrics_.handler_errors_total.Add({{"resource", client_.type().describe()}}).Increment();
      logger_.error("event handler failed",
                    {{"resource", client_.type().describe()}, {"error", e.what()}});
    } catch (...) {
      metrics_.handler_errors_total.Add({{"resource", client_.type().describe()}}).Increment();
      logger_.error("event handler failed",
                    {{"resource", client_.type().describe()}, {"error", "not a std::exception"}});
    }
  }
}

void Informer::relist() {
  kube::ListOptions list_options;
  list_options.label_selector = options_.label_selector;
  list_options.field_selector = options_.field_selector;
  list_options.limit = options_.page_size;
  json list = client_.list_all(options_.ns, list_options);
  std::vector<ObjectPtr> objects;
  objects.reserve(list["items"].size());
  for (auto& item : list["items"]) {
    if (!item.is_object() || !item.contains("metadata") || !item["metadata"].contains("name"))
      throw kube::DecodeError("list " + client_.type().describe() + " has an item without a name",
                              item.dump());
    if (options_.transform) options_.transform(item);
    objects.push_back(std::make_shared<const json>(std::move(item)));
  }
  const std::string version = list["metadata"].value("resourceVersion", "");
  const auto changes = store_->replace(std::move(objects), options_.ns);
  {
    std::lock_guard lock(mutex_);
    resource_version_ = version;
  }
  if (!synced_.exchange(true)) {
    std::lock_guard lock(mutex_);
    synced_cv_.notify_all();
  }
  for (const auto& change : changes) dispatch(change);
  logger_.info("listed", {{"resource", client_.type().describe()},
                          {"objects", store_->size()},
                          {"resourceVersion", version},
                          {"changes", changes.size()}});
}

void Informer::apply(kube::WatchEvent event) {
  json& object = event.object;
  const auto& expected_kind = client_.type().kind;
  if (!object.contains("metadata") || !object["metadata"].is_object())
    throw kube::DecodeError("watch event object has no metadata", object.dump());
  if (object.contains("metadata") && object["metadata"].contains("resourceVersion") &&
      object["metadata"]["resourceVersion"].is_string()) {
    std::lock_guard lock(mutex_);
    resource_version_ = object["metadata"]["resourceVersion"];
  }
  if (event.type == kube::WatchEventType::kBookmark) return;
  if (!expected_kind.empty() && object.contains("kind") && object["kind"] != expected_kind)
    throw kube::DecodeError("watch delivered a " + object["kind"].dump() + " where a " +
                                expected_kind + " was expected",
                            object.dump());
  if (!object["metadata"].contains("name"))
    throw kube::DecodeError("watch event object has no name", object.dump());
  event_counters_[static_cast<size_t>(event.type)]->Increment();
  const std::string key = Store::key_of(object);
  if (options_.transform) options_.transform(object);
  auto shared = std::make_shared<const json>(std::move(object));
  if (event.type == kube::WatchEventType::kDeleted) {
    auto old = store_->remove(key);
    // The deleted object's last state is what handlers want, even if we never saw it.
    dispatch({old != nullptr ? old : shared, nullptr});
  } else {
    auto old = store_->upsert(shared);
    dispatch({old, shared});
  }
}

Informer::Next Informer::watch_once() {
  kube::WatchOptions watch_options;
  watch_options.label_selector = options_.label_selector;
  watch_options.field_selector = options_.field_selector;
  watch_options.resource_version = resource_version();
  watch_options.allow_bookmarks = true;
  watch_options.timeout_seconds = options_.watch_timeout_seconds;
  watch_options.object_filter = options_.decode_filter;
  auto watch = client_.watch(options_.ns, watch_options);
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Next::kStop;
    active_watch_ = watch.get();
  }
  struct Detach {
    Informer* self;
    ~Detach() {
      std::lock_guard lock(self->mutex_);
      self->active_watch_ = nullptr;
    }
  } detach{this};
  const auto opened = clock_.now();
  bool delivered = false;
  while (auto event = watch->next()) {
    if (event->type == kube::WatchEventType::kError) {
      const auto error = kube::ApiError::from_response(500, event->object.dump(),
                                                       "watch " + client_.type().describe());
      if (error.kind() == kube::ErrorKind::kGone) {
        logger_.info("watch expired, relisting", {{"resource", client_.type().describe()},
                                                  {"message", error.status_message()}});
        count_restart("gone");
        return Next::kRelist;
      }
      throw error;
    }
    apply(std::move(*event));
    delivered = true;
  }
  if (stopping_) return Next::kStop;
  if (delivered || clock_.now() - opened >= options_.healthy_after) backoff_.reset();
  count_restart("closed");
  return Next::kRewatch;
}

void Informer::run() {
  name_this_thread("watch/" + client_.type().resource);
  bool need_list = true;
  while (!stopping_) {
    std::string reason;
    try {
      if (need_list) {
        relist();
        need_list = false;
      }
      const Next next = watch_once();
      if (next == Next::kStop) return;
      need_list = next == Next::kRelist;
      continue;
    } catch (const kube::ApiError& e) {
      if (stopping_) return;
      if (e.kind() == kube::ErrorKind::kGone) {
        count_restart("gone");
        need_list = true;
        continue;  // a relist needs no backoff: the server told us exactly what to do
      }
      reason = "error";
      logger_.warn(
          "list/watch failed",
          {{"resource", client_.type().describe()}, {"code", e.code()}, {"error", e.what()}});
    } catch (const kube::DecodeError& e) {
      if (stopping_) return;
      // A change we could not read may be lost: only a relist makes the cache trustworthy.
      reason = "decode_error";
      need_list = true;
      logger_.warn("undecodable list/watch data, relisting",
                   {{"resource", client_.type().describe()}, {"error", e.what()}});
    } catch (const kube::TransportError& e) {
      if (stopping_) return;
      reason = "error";
      logger_.warn("list/watch connection failed",
                   {{"resource", client_.type().describe()}, {"error", e.what()}});
    }
    count_restart(reason);
    const auto delay = backoff_.next();
    if (!sleep_for(delay)) return;
  }
}

}  // namespace perimeter::runtime
