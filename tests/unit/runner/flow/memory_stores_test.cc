// The memory stores on disk, as the SDK's SessionMemoryStores: download with the marker, syncs on
// the interval, the merge rules (the store wins conflicts), deletes only after their confirmation
// window (waived by the last sync), read-only stores, the bounded push-only flush, the folders
// removed at the end. A fake memory API that records every call, a fake clock, real files.
#include "runner/memory_stores.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agentapi/api_error.h"
#include "core/capturing_log_sink.h"
#include "core/fake_clock.h"
#include "pki/hmac.h"

namespace perimeter::runner {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
namespace fs = std::filesystem;

// One memory store server side, keyed by path.
class FakeMemoryApi final : public agentapi::MemoryApi {
 public:
  struct Stored {
    std::string id;
    std::string content;
  };
  std::map<std::string, Stored> memories;  // path -> memory
  std::vector<std::string> calls;
  int next_id = 0;
  // Called before each answer: lets a test make "another writer" act mid-sync.
  std::function<void(const std::string&)> on_call;

  void seed(const std::string& path, const std::string& content) {
    memories[path] = {"mem_" + std::to_string(++next_id), content};
  }
  agentapi::Memory render(const std::string& path, const Stored& s, bool full) const {
    agentapi::Memory m;
    m.type = "memory";
    m.id = s.id;
    m.path = path;
    m.content_sha256 = pki::sha256_hex(s.content);
    if (full) m.content = s.content;
    return m;
  }
  void note(const std::string& call) {
    calls.push_back(call);
    if (on_call) on_call(call);
  }
  agentapi::MemoryPage list_memories(const std::string&, const std::string& view, int limit,
                                     const std::string& page) override {
    note("list " + view);
    agentapi::MemoryPage out;
    for (auto it = memories.lower_bound(page); it != memories.end(); ++it) {
      if (static_cast<int>(out.data.size()) == limit) {
        out.next_page = it->first;
        break;
      }
      out.data.push_back(render(it->first, it->second, view == "full"));
    }
    return out;
  }
  agentapi::Memory retrieve_memory(const std::string&, const std::string& id,
                                   const std::string&) override {
    note("retrieve " + path_of(id));
    for (const auto& [path, s] : memories) {
      if (s.id == id) return render(path, s, true);
    }
    throw agentapi::ApiError("memories.retrieve", 404, "{}", "req");
  }
  agentapi::Memory create_memory(const std::string&, const std::string& path,
                                 const std::string& content) override {
    note("create " + path);
    if (memories.count(path)) throw agentapi::ApiError("memories.create", 409, "{}", "req");
    seed(path, content);
    return render(path, memories[path], false);
  }
  agentapi::Memory update_memory(const std::string&, const std::string& id,
                                 const std::string& content, const std::string& sha) override {
    note("update " + path_of(id));
    for (auto& [path, s] : memories) {
      if (s.id != id) continue;
      if (pki::sha256_hex(s.content) != sha)
        throw agentapi::ApiError("memories.update", 409, "{}", "r");
      s.content = content;
      return render(path, s, false);
    }
    throw agentapi::ApiError("memories.update", 404, "{}", "req");
  }
  void delete_memory(const std::string&, const std::string& id, const std::string& sha) override {
    note("delete " + path_of(id));
    for (auto it = memories.begin(); it != memories.end(); ++it) {
      if (it->second.id != id) continue;
      if (pki::sha256_hex(it->second.content) != sha) {
        throw agentapi::ApiError("memories.delete", 409, "{}", "r");
      }
      memories.erase(it);
      return;
    }
    throw agentapi::ApiError("memories.delete", 404, "{}", "req");
  }
  std::string path_of(const std::string& id) const {
    for (const auto& [path, s] : memories) {
      if (s.id == id) return path;
    }
    return id;
  }
  std::vector<std::string> take_calls() { return std::exchange(calls, {}); }
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << content;
}

class MemoryStoresTest : public ::testing::Test {
 protected:
  MemoryStoresTest() {
    char tmpl[] = "/tmp/memory-stores-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    workdir_ = dir_ + "/workspace";
    fs::create_directories(workdir_);
    api_.seed("/a.md", "alpha\n");
    api_.seed("/dir/b.md", "beta\n");
  }
  ~MemoryStoresTest() override { fs::remove_all(dir_); }

  std::unique_ptr<SessionMemoryStores> stores(milliseconds interval = seconds(15)) {
    SessionMemoryOptions options;
    options.workdir = workdir_;
    options.sync_interval = interval;
    return std::make_unique<SessionMemoryStores>(api_, options, clock_, Logger("memory", logs_));
  }
  json session(const std::string& extra = "") {
    return json::parse(R"({"resources": [{"type": "memory_store", "memory_store_id": "memstore_1",
                           "name": "notes", "mount_path": null)" +
                       extra + "}]}");
  }
  fs::path root() const { return fs::path(workdir_) / "memory" / "notes"; }
  bool logged(const std::string& text) const {
    for (const auto& line : logs_->lines()) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }

  std::string dir_, workdir_;
  FakeMemoryApi api_;
  testing::FakeClock clock_;
  std::shared_ptr<testing::CapturingLogSink> logs_ = std::make_shared<testing::CapturingLogSink>();
};

TEST_F(MemoryStoresTest, DownloadsEveryMemoryWithTheMarkerIntoTheWorkdirFallback) {
  auto memory = stores();
  memory->download(session());
  EXPECT_EQ(api_.take_calls(), (std::vector<std::string>{"list full"}));
  EXPECT_EQ(read_file(root() / "a.md"), "alpha\n");
  EXPECT_EQ(read_file(root() / "dir" / "b.md"), "beta\n");
  EXPECT_EQ(read_file(root() / ".anthropic-memory-store"), "version 1\nmemstore_1");
  struct stat st {};
  ASSERT_EQ(::stat((root() / "a.md").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((root() / "dir").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(memory->roots(), (std::vector<std::string>{root().string()}));
  EXPECT_TRUE(memory->read_only_roots().empty());
  EXPECT_TRUE(logged("downloaded memories"));
  memory->dispose();
  EXPECT_FALSE(fs::exists(root()));
  EXPECT_TRUE(fs::exists(fs::path(workdir_) / "memory")) << "only the store's own folder goes";
}

TEST_F(MemoryStoresTest, AMountPathIsUsedVerbatimAndAnUncleanOneOrALeftoverFolderIsRefused) {
  const std::string mount = dir_ + "/mnt/memory/notes";
  auto memory = stores();
  memory->download(session(R"(, "mount_path": ")" + mount + "\""));
  EXPECT_EQ(read_file(fs::path(mount) / "a.md"), "alpha\n");
  memory->dispose();

  EXPECT_THROW(stores()->download(session(R"(, "mount_path": "relative/notes")")),
               SessionMemoryError);
  EXPECT_THROW(stores()->download(session(R"(, "mount_path": "/mnt/../etc")")), SessionMemoryError);
  write_file(fs::path(mount) / "stale.md", "from a dead run");
  try {
    stores()->download(session(R"(, "mount_path": ")" + mount + "\""));
    FAIL() << "a leftover folder must be refused";
  } catch (const SessionMemoryError& error) {
    EXPECT_NE(std::string(error.what()).find("something already exists at the memory store's path"),
              std::string::npos);
  }
  EXPECT_EQ(read_file(fs::path(mount) / "stale.md"), "from a dead run") << "left as found";
}

TEST_F(MemoryStoresTest, SyncsOnlyOnceTheIntervalHasPassedAndRefusesAnIntervalUnderFiveSeconds) {
  EXPECT_THROW(stores(milliseconds(4999)), std::invalid_argument);
  auto memory = stores(seconds(5));
  memory->download(session());
  api_.take_calls();
  clock_.advance(milliseconds(4999));
  memory->sync_if_due();
  EXPECT_TRUE(api_.take_calls().empty());
  clock_.advance(milliseconds(1));
  memory->sync_if_due();
  EXPECT_EQ(api_.take_calls(), (std::vector<std::string>{"list basic"}))
      << "nothing changed: no content moves";
  memory->sync_if_due();
  EXPECT_TRUE(api_.take_calls().empty()) << "the interval restarts at each sync";
}

TEST_F(MemoryStoresTest, PushesLocalEditsAndNewFilesAndPullsRemoteChanges) {
  auto memory = stores();
  memory->download(session());
  api_.take_calls();
  write_file(root() / "a.md", "alpha, edited\n");
  write_file(root() / "new" / "c.md", "gamma\n");
  api_.memories["/dir/b.md"].content = "beta from elsewhere\n";
  memory->sync_all(false);
  // Shas decide everything first (uploads inline, by path); the pulls' content comes last.
  EXPECT_EQ(api_.take_calls(),
            (std::vector<std::string>{"list basic", "update /a.md", "create /new/c.md",
                                      "retrieve /dir/b.md"}));
  EXPECT_EQ(api_.memories["/a.md"].content, "alpha, edited\n");
  EXPECT_EQ(api_.memories["/new/c.md"].content, "gamma\n");
  EXPECT_EQ(read_file(root() / "dir" / "b.md"), "beta from elsewhere\n");
  memory->sync_all(false);
  EXPECT_EQ(api_.take_calls(), (std::vector<std::string>{"list basic"})) << "all settled";
}

TEST_F(MemoryStoresTest, TheStoreWinsAConflictAndAFileDeletedLocallyButChangedRemotelyComesBack) {
  auto memory = stores();
  memory->download(session());
  write_file(root() / "a.md", "mine\n");
  fs::remove(root() / "dir" / "b.md");
  api_.memories["/a.md"].content = "theirs\n";
  api_.memories["/dir/b.md"].content = "beta, theirs\n";
  memory->sync_all(false);
  EXPECT_EQ(read_file(root() / "a.md"), "theirs\n");
  EXPECT_EQ(api_.memories["/a.md"].content, "theirs\n");
  EXPECT_EQ(read_file(root() / "dir" / "b.md"), "beta, theirs\n");
  EXPECT_TRUE(logged("memory changed both locally and remotely; keeping the remote version"));
  EXPECT_TRUE(logged("memory deleted locally but changed remotely; restoring the remote version"));
}

TEST_F(MemoryStoresTest, ALocalDeleteReachesTheServerOnlyAfterItsConfirmationWindow) {
  auto memory = stores(seconds(5));
  memory->download(session());
  fs::remove(root() / "a.md");
  memory->sync_all(false);
  EXPECT_TRUE(api_.memories.count("/a.md")) << "first noticed: never deleted at once";
  clock_.advance(seconds(29));
  memory->sync_all(false);
  EXPECT_TRUE(api_.memories.count("/a.md")) << "29 s is inside the window";
  api_.take_calls();
  clock_.advance(seconds(1));
  memory->sync_all(false);
  EXPECT_EQ(api_.take_calls(), (std::vector<std::string>{"list basic", "delete /a.md"}));
  EXPECT_FALSE(api_.memories.count("/a.md"));
}

TEST_F(MemoryStoresTest, TheLastSyncWaivesTheWindowAndRunsOnce) {
  auto memory = stores();
  memory->download(session());
  fs::remove(root() / "a.md");
  EXPECT_FALSE(memory->finish(clock_.now() + seconds(30)));
  EXPECT_FALSE(api_.memories.count("/a.md"));
  EXPECT_THROW(memory->finish(clock_.now() + seconds(30)), std::logic_error);
}

TEST_F(MemoryStoresTest, AReadOnlyStorePullsButNeverPushesAndKeepsAnEditedFileTheServerDropped) {
  auto memory = stores();
  memory->download(session(R"(, "access": "read_only")"));
  EXPECT_EQ(memory->read_only_roots(), (std::vector<std::string>{root().string()}));
  write_file(root() / "a.md", "edited\n");
  write_file(root() / "mine.md", "new\n");
  fs::remove(root() / "dir" / "b.md");
  api_.take_calls();
  EXPECT_FALSE(memory->finish(clock_.now() + seconds(30)));
  EXPECT_FALSE(memory->flush_writes(clock_.now() + seconds(30)));
  for (const auto& call : api_.take_calls()) {
    EXPECT_TRUE(call.rfind("list", 0) == 0 || call.rfind("retrieve", 0) == 0) << call;
  }
  EXPECT_EQ(api_.memories["/a.md"].content, "alpha\n");
  EXPECT_TRUE(api_.memories.count("/dir/b.md"));
  EXPECT_FALSE(api_.memories.count("/mine.md"));
}

TEST_F(MemoryStoresTest, TheFlushPushesWritesButNoDeletesAndStartsNothingPastItsDeadline) {
  auto memory = stores();
  memory->download(session());
  api_.take_calls();
  fs::remove(root() / "dir" / "b.md");
  write_file(root() / "a.md", "flushed\n");
  write_file(root() / "c.md", "c\n");
  write_file(root() / "d.md", "d\n");
  // The deadline passes while the first upload runs.
  api_.on_call = [this](const std::string& call) {
    if (call == "update /a.md") clock_.advance(seconds(31));
  };
  EXPECT_TRUE(memory->flush_writes(clock_.now() + seconds(30)));
  EXPECT_EQ(api_.take_calls(), (std::vector<std::string>{"list basic", "update /a.md"}));
  EXPECT_EQ(api_.memories["/a.md"].content, "flushed\n");
  EXPECT_TRUE(api_.memories.count("/dir/b.md")) << "a flush sends no deletes";
  EXPECT_TRUE(logged("memory flush cut off part-way; 2 of 3 changed files"));
  api_.on_call = nullptr;
  EXPECT_FALSE(memory->flush_writes(clock_.now() + seconds(30)));
  EXPECT_EQ(api_.memories["/c.md"].content, "c\n");
  EXPECT_EQ(api_.memories["/d.md"].content, "d\n");
}

TEST_F(MemoryStoresTest, AFolderWhoseMarkerIsGoneIsRedownloadedAndOneWithAnotherMarkerLeftAlone) {
  auto memory = stores();
  memory->download(session());
  fs::remove_all(root());
  memory->sync_all(false);
  EXPECT_EQ(read_file(root() / "a.md"), "alpha\n") << "a vanished folder is downloaded again";
  write_file(root() / ".anthropic-memory-store", "version 1\nmemstore_other");
  write_file(root() / "a.md", "not ours\n");
  api_.take_calls();
  memory->sync_all(false);
  EXPECT_TRUE(api_.take_calls().empty());
  EXPECT_EQ(api_.memories["/a.md"].content, "alpha\n");
  memory->dispose();
  EXPECT_TRUE(fs::exists(root() / "a.md")) << "a folder that fails the marker check stays";
}

}  // namespace
}  // namespace perimeter::runner
